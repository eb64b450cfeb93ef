"""The runtime: the only code that turns configuration into runtime objects.

  trainer(cfg, stage_dir, ...)   a Lightning Trainer for any stage: `trainer.*` + the stage's own
                                 epochs / validation cadence, the `hardware` profile, the run's
                                 loggers, the `callbacks` group (checkpoints in the stage's folder),
                                 per-evaluation CSVs, RNG state in checkpoints, a checkpoint on
                                 SLURM's pre-timeout signal
  fabric(hardware)               a Lightning Fabric for hand-written loops, with the same strategy
                                 settings as the Trainer path (`hardware.build_strategy`)
  loggers(cfg) / close_loggers() the run's experiment loggers (one set per process, shared by stages)
  resume_checkpoint(cfg, dir)    `ckpt_path=last` -> the newest `<dir>/checkpoints/last*.ckpt`
  load_causal_lm / load_tokenizer  Hugging Face loading that honours `hardware` (device, dtype,
                                 device_map, max_memory, offload_folder; trust_remote_code off)

Paper code calls these; it never constructs a Trainer, a Fabric or calls `from_pretrained` itself.
Multi-stage pipelines use `rucai.runtime.stages`. Heavy imports stay inside the functions.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rucai.errors import UserError

log = logging.getLogger(__name__)

_LOGGERS: list[Any] | None = None


def route_library_logs() -> None:
    """Lightning installs its own console handler at import; let Hydra's handlers own its logs."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True


def instantiate_all(section: Any, **overrides: dict[str, Any]) -> list[Any]:
    """Instantiate every `_target_` mapping of a config section (a dict of named entries);
    `overrides[name]` updates that entry's arguments first."""
    from hydra.utils import instantiate

    if not section:
        return []
    out = []
    for name, conf in section.items():
        if name in overrides and overrides[name] is None:
            continue  # an override of None drops the entry
        if isinstance(conf, DictConfig) and "_target_" in conf:
            out.append(instantiate(conf, **(overrides.get(name) or {})))
    return out


def seed(cfg: DictConfig, offset: int = 0) -> None:
    import lightning as L

    L.seed_everything(int(cfg.seed) + offset, workers=True, verbose=False)


# ----------------------------------------------------------------------------- loggers


def loggers(cfg: DictConfig) -> list[Any]:
    """The run's loggers (`logger` group), created once per process and shared by every stage;
    hyper-parameters (the resolved config and the command-line overrides) logged once."""
    global _LOGGERS
    if _LOGGERS is None:
        from rucai.loggers import run_overrides

        route_library_logs()
        _LOGGERS = instantiate_all(cfg.get("logger"))
        if _LOGGERS:
            hparams = OmegaConf.to_container(cfg, resolve=True) | {"overrides": run_overrides()}
            for lg in _LOGGERS:
                lg.log_hyperparams(hparams)
    return _LOGGERS


def log_metrics(cfg: DictConfig, metrics: dict[str, Any], step: int | None = None) -> None:
    """Scalars to every logger of the run (for hand-written loops; Lightning logs by itself)."""
    scalars = {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    for lg in loggers(cfg):
        lg.log_metrics(scalars, step=step)


def close_loggers(status: str = "success") -> None:
    """Finalize the run's loggers (called by the dispatcher on success and on failure)."""
    global _LOGGERS
    for lg in _LOGGERS or []:
        try:
            lg.finalize(status)
        except Exception as e:  # a logger that fails to close must not hide the run's own result
            log.warning("closing logger %s: %s", type(lg).__name__, e)
    _LOGGERS = None
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=0 if status == "success" else 1)


# ----------------------------------------------------------------------------- checkpoints


def resume_checkpoint(cfg: DictConfig, ckpt_dir: str | Path) -> str | None:
    """What `ckpt_path` means for a folder of checkpoints: null -> fresh; `last` ->
    the newest `<ckpt_dir>/last*.ckpt` when one exists (else fresh); a path -> that file."""
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path in (None, "", "null"):
        return None
    if ckpt_path == "last":
        # the newest of last.ckpt / last-vN.ckpt: folders written with Lightning's version counter on
        # can hold a stale last.ckpt next to the file the resumed run kept writing
        found = sorted(Path(ckpt_dir).glob("last*.ckpt"), key=lambda p: p.stat().st_mtime) if Path(ckpt_dir).is_dir() else []
        if found:
            log.info("resuming from %s", found[-1])
            return str(found[-1])
        log.info("ckpt_path=last: no checkpoint in %s yet; starting fresh", ckpt_dir)
        return None
    p = Path(str(ckpt_path)).expanduser()
    if not p.exists():
        raise UserError(f"ckpt_path={ckpt_path} not found; give an existing .ckpt file or ckpt_path=last")
    return str(p)


# ----------------------------------------------------------------------------- Lightning


def trainer(cfg: DictConfig, root_dir: str | Path | None = None, *, callbacks: list | None = None,
            monitor: bool = True, validate: bool = True, **stage: Any) -> Any:
    """A Lightning Trainer for one stage.

    `trainer.*` from the config, then the stage's own settings (`max_epochs`,
    `check_val_every_n_epoch`, `gradient_clip_val`, ...) on top; devices/strategy/precision from
    `hardware`; the run's loggers; the `callbacks` group with checkpoints in `<root_dir>/checkpoints`
    (`last.ckpt` every epoch; monitor=False: no best-checkpoint tracking or early stopping);
    `<root_dir>/eval/{val,test}.csv`; RNG states saved in checkpoints; a checkpoint on SLURM's
    pre-timeout signal. `callbacks` are the stage's own extra callbacks.
    """
    from rucai.callbacks import EvalCSV, RNGState, SignalCheckpoint, StartEpoch
    from rucai.runtime import hardware

    route_library_logs()
    hardware.check(cfg.hardware)
    hardware.apply_threads(cfg.hardware)
    if cfg.hardware.accelerator == "cpu":
        hardware.fix_malloc_mmap_threshold()  # training's freed activations go back to the OS
    root = Path(root_dir or cfg.paths.output_dir)
    ckpt_dir = root / "checkpoints"
    cb_over: dict[str, Any] = {"model_checkpoint": {"dirpath": str(ckpt_dir)}}
    if not monitor:
        # monitor=None, top-1: the newest epoch's checkpoint (Lightning writes last.ckpt only when it
        # saved a top-k checkpoint in that epoch, so save_top_k=0 would leave no per-epoch last.ckpt)
        cb_over = {"model_checkpoint": {"dirpath": str(ckpt_dir), "monitor": None, "save_top_k": 1,
                                        "filename": "epoch_{epoch:03d}"},
                   "early_stopping": None}
    cbs = instantiate_all(cfg.get("callbacks"), **cb_over)
    cbs += every_epoch_last(cbs, ckpt_dir)
    cbs += list(callbacks or []) + [EvalCSV(str(root / "eval")), StartEpoch(), RNGState(),
                                     SignalCheckpoint(str(ckpt_dir))]
    kw = OmegaConf.to_container(cfg.trainer, resolve=True) if cfg.get("trainer") else {}
    kw.pop("_target_", None)
    kw |= {k: v for k, v in stage.items()}
    if not validate:
        kw["limit_val_batches"] = 0
    kw["enable_checkpointing"] = any(type(c).__name__ == "ModelCheckpoint" for c in cbs)
    import lightning as L

    return L.Trainer(callbacks=cbs, logger=loggers(cfg) or False, default_root_dir=str(root),
                     **kw, **hardware.trainer_kwargs(cfg.hardware))


def every_epoch_last(cbs: list, ckpt_dir: str | Path) -> list:
    """A `last.ckpt` written after every epoch for a run whose ModelCheckpoint monitors a metric.

    Lightning (2.6) writes `last.ckpt` only in an epoch that also saved a top-k checkpoint, so a
    monitored run resumed with `ckpt_path=last` would restart from its best epoch and redo up to
    `patience` epochs. A second, unmonitored top-1 ModelCheckpoint named `last` saves every epoch; the
    monitored one keeps only the best (its own `save_last` is switched off: one writer per file). An
    unmonitored ModelCheckpoint already saves every epoch and gets nothing extra."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    monitored = [c for c in cbs if isinstance(c, ModelCheckpoint) and c.monitor is not None]
    if not monitored:
        return []
    for c in monitored:
        c.save_last = False
    return [ModelCheckpoint(dirpath=str(ckpt_dir), filename="last", monitor=None, save_top_k=1,
                            save_last=False, enable_version_counter=False)]


def probe(trainer: Any) -> Any:
    """The trainer's StartEpoch callback (start epoch, seconds per training epoch)."""
    from rucai.callbacks import StartEpoch

    return next(c for c in trainer.callbacks if isinstance(c, StartEpoch))


# ----------------------------------------------------------------------------- Fabric


def fabric(hw: Any, max_grad_norm: float | None = None) -> Any:
    """A Lightning Fabric from a hardware profile (DeepSpeed clipping set from `max_grad_norm`)."""
    import lightning as L

    from rucai.runtime import hardware

    route_library_logs()
    hardware.check(hw)
    hardware.apply_threads(hw)
    return L.Fabric(**hardware.trainer_kwargs(hw, fabric=True, max_grad_norm=max_grad_norm))


# ----------------------------------------------------------------------------- Hugging Face


def torch_dtype(dtype: Any, hw: Any = None, device: str | None = None) -> Any:
    """`auto` -> bf16 when the profile's precision or the device says so, else fp32; `checkpoint`
    -> the checkpoint's own dtypes (transformers' "auto", e.g. FP8 weights); or a name."""
    import torch

    if dtype == "checkpoint":
        return "auto"
    if dtype in (None, "auto"):
        prec = str(_hw_get(hw, "precision") or "")
        if "bf16" in prec or (device or "").startswith("cuda") and not prec.startswith("32"):
            return torch.bfloat16
        if prec.startswith("16"):
            return torch.float16
        return torch.float32
    if not isinstance(dtype, str):
        return dtype
    out = getattr(torch, str(dtype), None)
    if not isinstance(out, torch.dtype):
        raise UserError(f"dtype={dtype!r}: use auto, checkpoint, float32, bfloat16 or float16")
    return out


def _hw_get(hw: Any, key: str) -> Any:
    if hw is None:
        return None
    return hw.get(key) if hasattr(hw, "get") else getattr(hw, key, None)


def device_kwargs(hw: Any, device: str | None = None) -> dict[str, Any]:
    """`from_pretrained` placement: `hardware.device_map` (+ max_memory, offload_folder) when set,
    else one device (`device`, or cuda:0 for a GPU profile when a GPU is visible)."""
    dm = _hw_get(hw, "device_map")
    if dm:
        kw: dict[str, Any] = {"device_map": OmegaConf.to_container(dm) if OmegaConf.is_config(dm) else dm}
        mm = _hw_get(hw, "max_memory")
        if mm:
            mm = OmegaConf.to_container(mm) if OmegaConf.is_config(mm) else dict(mm)
            kw["max_memory"] = {(int(k) if str(k).isdigit() else k): v for k, v in mm.items()}
        if _hw_get(hw, "offload_folder"):
            kw["offload_folder"] = str(_hw_get(hw, "offload_folder"))
        return kw
    if device:
        return {"device_map": device} if device != "cpu" else {}
    return {}


def _load_error(what: str, path: Any, e: Exception) -> UserError:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return UserError(f"cannot load {what} {path!r}: not a local folder and not in the HF cache "
                     f"(HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '0')}): {first}")


def load_causal_lm(path: str | Path, hardware: Any = None, *, dtype: Any = "auto", device: str | None = None,
                   trust_remote_code: bool = False, **kwargs: Any) -> Any:
    """AutoModelForCausalLM.from_pretrained honouring the hardware profile (see `device_kwargs`)."""
    from transformers import AutoModelForCausalLM

    kw = device_kwargs(hardware, device) | {"dtype": torch_dtype(dtype, hardware, device),
                                            "trust_remote_code": bool(trust_remote_code)} | kwargs
    try:
        return AutoModelForCausalLM.from_pretrained(str(path), **kw)
    except OSError as e:
        raise _load_error("model", str(path), e) from None


def load_image_text_lm(path: str | Path, hardware: Any = None, *, dtype: Any = "auto", device: str | None = None,
                       trust_remote_code: bool = False, **kwargs: Any) -> Any:
    """AutoModelForImageTextToText.from_pretrained (e.g. Qwen2-VL, which AutoModelForCausalLM does not
    map), honouring the hardware profile as `load_causal_lm`."""
    from transformers import AutoModelForImageTextToText

    kw = device_kwargs(hardware, device) | {"dtype": torch_dtype(dtype, hardware, device),
                                            "trust_remote_code": bool(trust_remote_code)} | kwargs
    try:
        return AutoModelForImageTextToText.from_pretrained(str(path), **kw)
    except OSError as e:
        raise _load_error("model", str(path), e) from None


def load_encoder(path: str | Path, *, trust_remote_code: bool = False, **kwargs: Any) -> Any:
    """AutoModel.from_pretrained (a bare encoder, e.g. BGE for dense retrieval), on CPU in fp32."""
    from transformers import AutoModel

    try:
        return AutoModel.from_pretrained(str(path), trust_remote_code=bool(trust_remote_code), **kwargs)
    except OSError as e:
        raise _load_error("encoder", str(path), e) from None


def load_tokenizer(path: str | Path, *, trust_remote_code: bool = False, **kwargs: Any) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), trust_remote_code=bool(trust_remote_code), **kwargs)
    except OSError as e:
        raise _load_error("tokenizer", str(path), e) from None


def load_image_processor(path: str | Path, **kwargs: Any) -> Any:
    """AutoImageProcessor.from_pretrained (a vision-language model's pixel preprocessing)."""
    from transformers import AutoImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError) as e:
        raise _load_error("image processor", str(path), e) from None
