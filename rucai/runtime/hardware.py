"""Hardware profiles -> Lightning Trainer arguments.

A profile (conf/hardware/*.yaml) sets accelerator, devices, num_nodes, strategy and precision.
`check()` turns "this profile needs GPUs that are not there" into one clear line before Lightning
raises a traceback; `build_strategy()` instantiates strategy objects (DeepSpeed needs plain dicts).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rucai.errors import UserError


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def requested_devices(hw: Any) -> int | None:
    d = hw.devices
    if isinstance(d, int):
        return d
    if OmegaConf.is_list(d) or isinstance(d, list | tuple):
        return len(d)
    if isinstance(d, str) and d.lstrip("-").isdigit():
        return int(d)
    return None  # "auto"


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU multiplies bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated, slow."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return False
    return any(flag in cpuinfo.split() for flag in ("avx512_bf16", "amx_bf16"))


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)


def fix_malloc_mmap_threshold(threshold: int = 128 * 1024) -> bool:
    """Pin glibc's mmap threshold so large tensor buffers are returned to the OS when freed.

    glibc raises its mmap threshold each time a big mmapped block is freed (up to 32 MiB), after
    which CPU training's many short-lived activation/gradient buffers of a few MB come from the heap
    and fragment it: CoCoRec's office_cpu run grew to 12-14 GB RSS (measured: 25 bf16 steps 4.6 GB
    by default vs 0.8 GB pinned). Pinning the threshold (what `MALLOC_MMAP_THRESHOLD_=131072` does)
    turns the dynamic adjustment off. A user's own MALLOC_MMAP_THRESHOLD_ wins; non-glibc: no-op.
    Called for CPU training (`rucai.runtime.trainer`), not for generation: there every KV-cache
    step maps fresh pages, and SmolLM2's batched decoding measured ~35% slower pinned.
    """
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") or not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        return bool(ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, int(threshold)))
    except (OSError, AttributeError):  # musl or no libc.so.6
        return False


def require_cuda(experiment: str, why: str, instead: str) -> None:
    """One line when an experiment that only makes sense on a GPU (a paper-size model) meets a machine
    without one, whatever its hardware profile says: `why` names the work, `instead` a CPU experiment."""
    if visible_gpus() == 0:
        raise UserError(f"experiment {experiment} needs a CUDA GPU ({why}); run it on a GPU node, "
                        f"or try experiment={instead}")


def check(hw: Any, n_gpus: int | None = None) -> None:
    """Raise a one-line UserError when the profile cannot run on this machine."""
    wants_gpu = bool(hw.needs_gpu) or hw.accelerator in ("gpu", "cuda")
    if not wants_gpu:
        if str(hw.precision).startswith("bf16") and not cpu_has_bf16():
            import logging

            logging.getLogger(__name__).warning(
                "hardware.precision=%s on a CPU without AVX512-BF16/AMX: bf16 is emulated and slower than "
                "fp32 here; set hardware.precision=32-true", hw.precision)
        return
    n = visible_gpus() if n_gpus is None else n_gpus
    if n == 0:
        raise UserError(f"hardware={hw.name} needs CUDA GPUs; none visible (use hardware=cpu, or run on a GPU node)")
    want = requested_devices(hw)
    if want is not None and want > 0 and want > n and int(hw.num_nodes) == 1:
        raise UserError(
            f"hardware={hw.name} asks for {want} GPUs but {n} are visible "
            f"(set hardware.devices={n} or use a bigger node)"
        )


def build_strategy(hw: Any, flavour: str = "pytorch", max_grad_norm: float | None = None) -> Any:
    """The profile's strategy for the Trainer (`flavour="pytorch"`) or for Fabric (`"fabric"`):
    a registry name, or the same class from `lightning.<flavour>.strategies` with every setting
    kept. Mappings are instantiated with `_convert_="all"`, so nested DeepSpeed settings arrive as
    plain dicts (DeepSpeedStrategy rejects DictConfig)."""
    s = hw.strategy
    if not (isinstance(s, DictConfig) or isinstance(s, dict)):
        return s  # "auto", "ddp", ...
    from hydra.utils import instantiate

    s = OmegaConf.to_container(s, resolve=True) if isinstance(s, DictConfig) else dict(s)
    target = str(s.get("_target_", ""))
    if flavour == "fabric" and target.startswith("lightning.pytorch.strategies."):
        s["_target_"] = target.replace("lightning.pytorch.", "lightning.fabric.", 1)
    built = instantiate(s, _convert_="all")
    if max_grad_norm and type(built).__name__ == "DeepSpeedStrategy":
        built.config["gradient_clipping"] = float(max_grad_norm)  # DeepSpeed clips in its optimizer step
    return built


def thread_count(setting: Any, cores: int | None = None, load: float | None = None, jobs: int | None = None,
                 env: dict[str, str] | None = None) -> int | None:
    """Intra-op threads for `hardware.threads` (null -> None: leave torch's default)."""
    if setting in (None, "", "null"):
        return None
    env = os.environ if env is None else env
    if str(setting) != "auto":
        try:
            n = int(setting)
        except ValueError:
            n = 0
        if n < 1:
            raise UserError(f"hardware.threads={setting!r}; use null, auto or a positive number")
        return n
    if env.get("OMP_NUM_THREADS", "").isdigit() and int(env["OMP_NUM_THREADS"]) > 0:
        return int(env["OMP_NUM_THREADS"])
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    load = os.getloadavg()[0] if load is None else load
    jobs = jobs or max(1, int(env.get("RUCAI_PARALLEL_JOBS", "1") or 1))
    free = max(1, cores - int(round(load)))
    return max(1, free // jobs)


def apply_threads(hw: Any) -> int | None:
    """Set torch's intra-op threads from the profile; returns the count set (None: untouched)."""
    n = thread_count(hw.get("threads") if hasattr(hw, "get") else getattr(hw, "threads", None))
    if n is not None:
        import logging

        import torch

        torch.set_num_threads(n)
        logging.getLogger(__name__).info("torch intra-op threads: %d (hardware.threads=%s)", n, hw.get("threads"))
    return n


def trainer_kwargs(hw: Any, fabric: bool = False, max_grad_norm: float | None = None) -> dict[str, Any]:
    """accelerator/devices/num_nodes/precision/strategy (+ the SLURM environment) for a Lightning
    Trainer, or for a Fabric (`fabric=True`)."""
    devices = hw.devices
    if OmegaConf.is_list(devices):
        devices = list(devices)
    kwargs = dict(
        accelerator=hw.accelerator,
        devices=devices,
        num_nodes=int(hw.num_nodes),
        precision=hw.precision,
        strategy=build_strategy(hw, "fabric" if fabric else "pytorch", max_grad_norm),
    )
    if fabric:
        from lightning.fabric.plugins.environments import SLURMEnvironment
    else:
        from lightning.pytorch.plugins.environments import SLURMEnvironment

    if SLURMEnvironment.detect():
        # submitit owns requeueing (rucai.launchers); Lightning only reads ranks from SLURM
        kwargs["plugins"] = [SLURMEnvironment(auto_requeue=False)]
    return kwargs


def slurm_env() -> dict[str, Any]:
    """SLURM facts about the current job, for metrics.json (empty outside SLURM)."""
    if "SLURM_JOB_ID" not in os.environ:
        return {}
    return {"slurm_job_id": os.environ.get("SLURM_ARRAY_JOB_ID", os.environ["SLURM_JOB_ID"])
            + (f"_{os.environ['SLURM_ARRAY_TASK_ID']}" if "SLURM_ARRAY_TASK_ID" in os.environ else ""),
            "slurm_restart_count": int(os.environ.get("SLURM_RESTART_COUNT", 0))}


def _deepspeed_zero(trainer: Any) -> dict[str, Any] | None:
    """The ZeRO section of the trainer's DeepSpeed config, or None for other strategies."""
    strategy = getattr(trainer, "strategy", None) if trainer is not None else None
    if type(strategy).__name__ != "DeepSpeedStrategy":
        return None
    return dict((getattr(strategy, "config", None) or {}).get("zero_optimization", {}))


def adam(module: Any, params: Any, lr: float, weight_decay: float = 0.0, decoupled: bool = False) -> Any:
    """Adam(W) for `module`'s trainer: DeepSpeed's CPU Adam when ZeRO offloads the optimizer.

    DeepSpeed refuses a torch optimizer under ZeRO-Offload (it would run the update on the CPU
    through slow per-parameter Python); `DeepSpeedCPUAdam` is the vectorised equivalent (JIT-built on
    first use). Every other strategy gets torch's Adam/AdamW.
    """
    import torch

    zero = _deepspeed_zero(getattr(module, "_trainer", None))
    if zero and (zero.get("offload_optimizer") or {}).get("device") == "cpu":
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(params, lr=lr, weight_decay=weight_decay, adamw_mode=decoupled)
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    return cls(params, lr=lr, weight_decay=weight_decay)


def consolidated_test_checkpoint(trainer: Any, ckpt_path: str | None) -> str | None:
    """ZeRO-3 checkpoints are sharded folders that DeepSpeed cannot load outside fitting (its
    inference engine has no optimizer to restore the 16-bit weights from). Collate the folder into
    one fp32 file next to it and have the strategy load full weights; other strategies: unchanged."""
    zero = _deepspeed_zero(trainer)
    if not zero or zero.get("stage") != 3 or not ckpt_path or not os.path.isdir(ckpt_path):
        return ckpt_path
    out = ckpt_path.rstrip("/") + ".fp32.ckpt"
    if trainer.is_global_zero and not os.path.exists(out):
        from lightning.pytorch.utilities.deepspeed import convert_zero_checkpoint_to_fp32_state_dict

        convert_zero_checkpoint_to_fp32_state_dict(ckpt_path, out)
    trainer.strategy.barrier("consolidate-zero3")
    trainer.strategy.load_full_weights = True
    return out
