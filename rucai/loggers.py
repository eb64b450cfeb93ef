"""Experiment loggers. wandb goes offline by itself when there are no credentials."""

from __future__ import annotations

import logging
import netrc
import os
from typing import Any

log = logging.getLogger(__name__)


def wandb_has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        path = os.environ.get("NETRC") or os.path.expanduser("~/.netrc")
        auth = netrc.netrc(path).authenticators(os.environ.get("WANDB_BASE_URL", "api.wandb.ai").split("//")[-1])
        return auth is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_mode(requested: str | None = None) -> str:
    """online | offline | disabled: WANDB_MODE wins, then `requested`, then credentials decide."""
    mode = os.environ.get("WANDB_MODE") or requested
    if mode in ("offline", "disabled", "dryrun"):
        return "offline" if mode == "dryrun" else mode
    if not wandb_has_credentials():
        if mode == "online":
            log.warning("wandb: no credentials (WANDB_API_KEY or ~/.netrc); logging offline instead")
        return "offline"
    return "online"


def wandb_logger(
    project: str,
    name: str | None = None,
    group: str | None = None,
    tags: list[str] | None = None,
    save_dir: str = ".",
    mode: str | None = None,
    **kwargs: Any,
):
    from lightning.pytorch.loggers import WandbLogger

    resolved = wandb_mode(mode)
    os.makedirs(save_dir, exist_ok=True)
    auto_group, auto_name = sweep_identity()
    group = group or auto_group
    name = name or auto_name
    log.info("wandb: mode=%s project=%s group=%s name=%s", resolved, project, group, name)
    return WandbLogger(
        project=project,
        name=name,
        group=group,
        tags=list(tags or []),
        save_dir=save_dir,
        offline=resolved == "offline",
        mode=resolved,
        settings=_settings(),
        **kwargs,
    )


def sweep_identity() -> tuple[str | None, str | None]:
    """(group, name) for a run: the runs of one multirun sweep share a group named after the sweep;
    each run is named after its job number and overrides."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None, None
    hc = HydraConfig.get()
    exp = hc.runtime.choices.get("experiment") or hc.job.name
    if hc.mode == RunMode.MULTIRUN:
        sweep = os.path.basename(os.path.normpath(str(hc.sweep.dir)))
        return f"{exp}/{sweep}", f"{hc.job.num}:{hc.job.override_dirname}" if hc.job.override_dirname else str(hc.job.num)
    return str(exp), os.path.basename(os.path.normpath(hc.runtime.output_dir))


def run_overrides() -> list[str]:
    """The command-line overrides of this run (empty outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def _settings():
    import wandb

    # never block a run on the network: short init timeout, no console capture tricks
    return wandb.Settings(init_timeout=60, console="off", x_disable_stats=True)
