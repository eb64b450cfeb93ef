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


def csv_logger(save_dir: str, name: str = "csv", version: str = "", **kwargs: Any):
    """Lightning's CSVLogger, except that an existing `metrics.csv` is appended to, not deleted.

    Lightning's writer deletes the file when it starts, so a run resumed with `ckpt_path=last` would
    keep only the epochs after the resume. Here the rows before it stay (a resumed run's rows go on
    with its epoch and step; a fresh run in a used folder starts again at epoch 0 below them), and a
    metric first logged after the resume widens the header as in Lightning."""
    import csv

    from lightning.fabric.loggers.logger import rank_zero_experiment
    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.loggers.csv_logs import ExperimentWriter

    class AppendingWriter(ExperimentWriter):
        def _check_log_dir_exists(self) -> None:  # called by __init__; Lightning's deletes metrics.csv
            if self._fs.isfile(self.metrics_file_path):
                with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                    self.metrics_keys = sorted(next(csv.reader(f), []))

    class AppendingCSVLogger(CSVLogger):
        @property
        @rank_zero_experiment
        def experiment(self) -> ExperimentWriter:
            if self._experiment is None:
                self._fs.makedirs(self.root_dir, exist_ok=True)
                self._experiment = AppendingWriter(log_dir=self.log_dir)
            return self._experiment

    return AppendingCSVLogger(save_dir=save_dir, name=name, version=version, **kwargs)


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
