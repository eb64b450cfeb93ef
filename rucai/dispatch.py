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


def _git_commit() -> str | None:
    import subprocess

    from rucai.cli import ROOT

    try:
        p = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if p.returncode != 0:
        return None
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True, timeout=10).stdout.strip()
    return p.stdout.strip() + ("-dirty" if dirty else "")


def run_record(cfg: DictConfig) -> dict[str, Any]:
    """What every run's metrics.json starts with: experiment, task, where, when, which code."""
    import socket
    import time

    from rucai.runtime.hardware import slurm_env

    return {"experiment": cfg.experiment_name, "task": cfg.task, "status": "running",
            "start_time": time.strftime("%Y-%m-%dT%H:%M:%S"), "git_commit": _git_commit(),
            "host": socket.gethostname(), "seed": cfg.get("seed")} | slurm_env()


def _write_record(out: Path, record: dict[str, Any], t0: float) -> None:
    import time

    from rucai.runtime.stages import is_rank_zero
    from rucai.utils.io import atomic_write_json

    record["end_time"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    record["seconds"] = round(time.perf_counter() - t0, 2)
    if is_rank_zero():
        atomic_write_json(out / "metrics.json", record)


def config_error(e: BaseException) -> UserError | None:
    """A config node whose keys do not fit its `_target_` (Hydra's InstantiationException over a
    TypeError: a key the target does not take, or a required one missing) as one line naming the key
    and the fix; None for anything else."""
    import re

    from hydra.errors import InstantiationException

    if not isinstance(e, InstantiationException) or not isinstance(e.__cause__, TypeError):
        return None
    text, cause = str(e), str(e.__cause__)
    node = (re.search(r"full_key: (\S+)", text) or [None, "<config>"])[1]
    target = (re.search(r"target '([^']+)'", text) or [None, "its _target_"])[1]
    group = node.split(".")[0]
    if m := re.search(r"unexpected keyword argument '(\w+)'", cause):
        return UserError(f"{node}.{m[1]} is set but {target} takes no '{m[1]}' (an experiment or debug overlay "
                         f"may set it for another {group} option): drop it with ~{node}.{m[1]} or choose a "
                         f"{group} that takes it")
    if m := re.search(r"missing \d+ required (?:positional |keyword-only )?arguments?: (.+)$", cause):
        names = re.findall(r"'(\w+)'", m[1])
        return UserError(f"{target} ({node}) needs {', '.join(names)}: set "
                         f"{' '.join(f'+{node}.{n}=...' for n in names)}")
    return None


def run_task(cfg: DictConfig) -> float | None:
    """Run the configured task and own its record: `config_resolved.yaml` before it starts,
    `metrics.json` (the run record + the metrics the task returns) when it ends, whether it
    completed, was interrupted or failed; the run's loggers are closed either way."""
    import time

    from rucai.registry import get_task
    from rucai.runtime import close_loggers, log_metrics, loggers
    from rucai.runtime.stages import is_rank_zero
    from rucai.utils.io import atomic_write_text

    t0 = time.perf_counter()
    out = Path(cfg.paths.output_dir)
    record: dict[str, Any] = {"experiment": cfg.get("experiment_name"), "task": cfg.get("task")}
    try:
        fn = get_task(cfg.task)
        try:
            resolved = OmegaConf.to_yaml(cfg, resolve=True)
        except Exception as e:  # an interpolation that cannot resolve is a config error
            raise UserError(f"config does not resolve: {e}".replace("\n", " ")) from e
        if is_rank_zero():
            atomic_write_text(out / "config_resolved.yaml", resolved)
        record = run_record(cfg)
        loggers(cfg)  # every run opens its loggers (config logged once); stages share them
        metrics = dict(fn(cfg) or {})
        status = metrics.pop("status", "completed")
        record |= {k: v for k, v in metrics.items() if k not in record} | {"status": status}
        log_metrics(cfg, {f"final/{k}" if "/" not in k else k: v for k, v in metrics.items()})
        close_loggers("success")
        _write_record(out, record, t0)
    except BaseException as e:
        e = config_error(e) or e
        msg = (str(e).splitlines()[0] if str(e) else type(e).__name__) if isinstance(e, UserError) else \
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")
        interrupted = isinstance(e, KeyboardInterrupt | SystemExit)
        record |= {"status": "interrupted" if interrupted else "failed", "error": msg}
        try:
            close_loggers("failed")
            _write_record(out, record, t0)
        except Exception:
            pass
        if not isinstance(e, UserError) or _is_multirun():
            raise  # multirun: keep the sweep going, the launcher reports the failed job
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(2)
    table = format_metrics(record)
    if table:
        print(f"\n{cfg.experiment_name} ({cfg.task}) -> {cfg.paths.output_dir}\n{table}")
    value = record.get(cfg.monitor.metric) if cfg.get("monitor") else None
    return float(value) if isinstance(value, int | float) else None
