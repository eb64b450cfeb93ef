"""Core tasks: `train` (fit, then test the best checkpoint) and `evaluate` (test a checkpoint).

Every run writes into its own Hydra output directory: `config_resolved.yaml`, `metrics.json`
(atomic), `eval/{val,test}.csv`, `checkpoints/` and the loggers' folders.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rucai.errors import UserError
from rucai.registry import task

log = logging.getLogger(__name__)


def _instantiate_all(section: Any) -> list[Any]:
    """Instantiate every `_target_` mapping in a config section (a dict of named entries)."""
    from hydra.utils import instantiate

    if not section:
        return []
    out = []
    for name, conf in section.items():
        if isinstance(conf, DictConfig) and "_target_" in conf:
            log.debug("instantiating %s: %s", name, conf._target_)
            out.append(instantiate(conf))
    return out


def resolve_ckpt_path(ckpt_path: Any, output_dir: Path) -> str | None:
    """`last` -> `<output_dir>/checkpoints/last.ckpt` when it exists (resume), else a fresh run."""
    if ckpt_path in (None, "", "null"):
        return None
    if ckpt_path == "last":
        last = output_dir / "checkpoints" / "last.ckpt"
        if last.is_file():
            log.info("resuming from %s", last)
            return str(last)
        log.info("ckpt_path=last: no checkpoint in %s yet; starting a fresh run", last.parent)
        return None
    p = Path(str(ckpt_path)).expanduser()
    if not p.is_file():
        raise UserError(f"ckpt_path={ckpt_path} not found; give an existing .ckpt file or ckpt_path=last")
    return str(p)


def _route_library_logs() -> None:
    """Lightning installs its own console handler at import; let Hydra's handlers own its logs."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True


def build(cfg: DictConfig):
    """Instantiate (datamodule, model, trainer, start-epoch probe) from the composed config."""
    import lightning as L
    from hydra.utils import instantiate

    from rucai import hardware
    from rucai.callbacks import EvalCSV, StartEpoch

    _route_library_logs()
    hardware.check(cfg.hardware)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    output_dir = Path(cfg.paths.output_dir)

    dm = instantiate(cfg.data, _convert_="all")
    dm.setup("fit")
    if getattr(dm, "stats", None):
        log.info("data: %s", dm.stats)
    extra = dm.model_kwargs() if hasattr(dm, "model_kwargs") else {}
    model = instantiate(cfg.model, _convert_="all", **extra)

    probe = StartEpoch()
    callbacks = _instantiate_all(cfg.callbacks) + [EvalCSV(str(output_dir / "eval")), probe]
    loggers = _instantiate_all(cfg.logger)
    trainer = instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        default_root_dir=str(output_dir),
        **hardware.trainer_kwargs(cfg.hardware),
    )
    from rucai.loggers import run_overrides

    hparams = OmegaConf.to_container(cfg, resolve=True) | {"overrides": run_overrides()}
    for lg in loggers:
        lg.log_hyperparams(hparams)
    return dm, model, trainer, probe


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if getattr(v, "numel", lambda: 1)() == 1}


def _best_val(trainer) -> dict[str, float]:
    """Validation metrics at the monitored checkpoint's epoch, read from the eval CSV."""
    import csv

    ckpt = trainer.checkpoint_callback
    path = Path(trainer.default_root_dir) / "eval" / "val.csv"
    if ckpt is None or not path.is_file() or ckpt.monitor is None:
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    rows = [r for r in rows if r.get(ckpt.monitor) not in (None, "")]
    if not rows:
        return {}
    pick = max if ckpt.mode == "max" else min
    best = pick(rows, key=lambda r: float(r[ckpt.monitor]))
    return {k: float(v) for k, v in best.items() if k.startswith("val/")} | {"best_epoch": int(best["epoch"])}


@task("train")
def train(cfg: DictConfig) -> dict[str, Any]:
    from rucai.utils.io import atomic_write_json

    output_dir = Path(cfg.paths.output_dir)
    dm, model, trainer, probe = build(cfg)
    ckpt = resolve_ckpt_path(cfg.ckpt_path, output_dir)
    from rucai.hardware import slurm_env

    metrics: dict[str, Any] = {"experiment": cfg.experiment_name, "task": cfg.task, "status": "running"}
    metrics |= slurm_env()
    t0 = time.perf_counter()
    if cfg.train:
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt)
        metrics |= {
            "epochs_trained": trainer.current_epoch,
            "start_epoch": probe.start_epoch,
            "resumed_from": ckpt,
            "fit_seconds": round(time.perf_counter() - t0, 2),
            "sec_per_epoch": round(sum(probe.epoch_seconds) / max(len(probe.epoch_seconds), 1), 3),
        }
        metrics |= _best_val(trainer)
        if trainer.interrupted:
            metrics["status"] = "interrupted"
            atomic_write_json(output_dir / "metrics.json", metrics)
            log.warning("training was interrupted; resume with ckpt_path=last hydra.run.dir=%s", output_dir)
            return metrics
    if cfg.test:
        best = getattr(trainer.checkpoint_callback, "best_model_path", "") if cfg.train else ""
        test_ckpt = best or (ckpt if not cfg.train else None)
        if cfg.train and not best:
            log.warning("no best checkpoint recorded; testing the current weights")
        from rucai.hardware import consolidated_test_checkpoint

        test_ckpt = consolidated_test_checkpoint(trainer, test_ckpt)
        results = trainer.test(model, datamodule=dm, ckpt_path=test_ckpt, verbose=False)
        metrics |= _scalars(results[0] if results else {})
        metrics["test_ckpt"] = test_ckpt
    metrics["status"] = "completed"
    metrics["total_seconds"] = round(time.perf_counter() - t0, 2)
    if trainer.is_global_zero:
        atomic_write_json(output_dir / "metrics.json", metrics)
    return metrics


@task("evaluate")
def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test a trained checkpoint (`ckpt_path=<file>`) on the configured data."""
    from rucai.utils.io import atomic_write_json

    if not cfg.ckpt_path:
        raise UserError("task=evaluate needs ckpt_path=<path to a .ckpt file>")
    output_dir = Path(cfg.paths.output_dir)
    dm, model, trainer, _ = build(cfg)
    ckpt = resolve_ckpt_path(cfg.ckpt_path, output_dir)
    from rucai.hardware import consolidated_test_checkpoint

    ckpt = consolidated_test_checkpoint(trainer, ckpt)
    results = trainer.test(model, datamodule=dm, ckpt_path=ckpt, verbose=False)
    metrics = {"experiment": cfg.experiment_name, "task": "evaluate", "test_ckpt": ckpt, "status": "completed"}
    metrics |= _scalars(results[0] if results else {})
    if trainer.is_global_zero:
        atomic_write_json(output_dir / "metrics.json", metrics)
    return metrics
