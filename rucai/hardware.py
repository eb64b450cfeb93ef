"""Hardware profiles -> Lightning Trainer arguments.

A profile (conf/hardware/*.yaml) sets accelerator, devices, num_nodes, strategy and precision.
`check()` turns "this profile needs GPUs that are not there" into one clear line before Lightning
raises a traceback; `build_strategy()` instantiates strategy objects (DeepSpeed needs plain dicts).
"""

from __future__ import annotations

import os
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


def check(hw: Any, n_gpus: int | None = None) -> None:
    """Raise a one-line UserError when the profile cannot run on this machine."""
    wants_gpu = bool(hw.needs_gpu) or hw.accelerator in ("gpu", "cuda")
    if not wants_gpu:
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


def build_strategy(hw: Any) -> Any:
    """Return a Lightning strategy: a registry name or an instantiated object.

    Strategy mappings are instantiated with `_convert_="all"`, so nested DeepSpeed settings
    arrive as plain dicts/lists (DeepSpeedStrategy rejects DictConfig).
    """
    strategy = hw.strategy
    if isinstance(strategy, DictConfig) or isinstance(strategy, dict):
        from hydra.utils import instantiate

        return instantiate(strategy, _convert_="all")
    return strategy


def trainer_kwargs(hw: Any) -> dict[str, Any]:
    devices = hw.devices
    if OmegaConf.is_list(devices):
        devices = list(devices)
    kwargs = dict(
        accelerator=hw.accelerator,
        devices=devices,
        num_nodes=int(hw.num_nodes),
        precision=hw.precision,
        strategy=build_strategy(hw),
    )
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
