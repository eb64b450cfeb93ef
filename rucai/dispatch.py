"""What `run.py` calls after Hydra composed the config: pick the task, run it, report."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rucai.errors import UserError

log = logging.getLogger("rucai")


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def format_metrics(metrics: dict[str, Any]) -> str:
    rows = [(k, f"{v:.4f}" if isinstance(v, float) else str(v)) for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and "/" in k]
    if not rows:
        return ""
    w = max(len(k) for k, _ in rows)
    lines = [f"{'metric'.ljust(w)}  value", f"{'-' * w}  ------"] + [f"{k.ljust(w)}  {v}" for k, v in rows]
    return "\n".join(lines)


def _finish_wandb() -> None:
    """Close this job's wandb run, so the next job of an in-process sweep starts its own."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def run_task(cfg: DictConfig) -> float | None:
    from rucai.registry import get_task
    from rucai.utils.io import atomic_write_json, atomic_write_text

    try:
        fn = get_task(cfg.task)
        out = Path(cfg.paths.output_dir)
        try:
            resolved = OmegaConf.to_yaml(cfg, resolve=True)
        except Exception as e:  # an interpolation that cannot resolve is a config error
            raise UserError(f"config does not resolve: {e}".replace("\n", " ")) from e
        atomic_write_text(out / "config_resolved.yaml", resolved)
        try:
            metrics = fn(cfg) or {}
        finally:
            _finish_wandb()
    except UserError as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if _is_multirun():
            # keep the sweep going and record the failure in the job's own directory
            try:
                atomic_write_json(Path(cfg.paths.output_dir) / "metrics.json",
                                  {"experiment": cfg.experiment_name, "status": "failed", "error": msg})
            except Exception:
                pass
            raise
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(2)
    table = format_metrics(metrics)
    if table:
        print(f"\n{cfg.experiment_name} ({cfg.task}) -> {cfg.paths.output_dir}\n{table}")
    value = metrics.get(cfg.monitor.metric) if cfg.get("monitor") else None
    return float(value) if isinstance(value, int | float) else None
