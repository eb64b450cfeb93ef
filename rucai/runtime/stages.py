"""One stage mechanism for multi-stage pipelines.

A pipeline is a sequence of named stages. Each stage owns a folder (`<run dir>/<name>`, or a folder
the method config points at to share a stage between runs) and ends by writing `<folder>/done.json`
atomically: the stage's result plus when it finished. A stage whose done record exists is reused,
not recomputed. A stage interrupted before its record was written runs again; under
`ckpt_path=last` it resumes from `<folder>/checkpoints/last.ckpt` (a Lightning stage; see
`rucai.runtime.trainer`) or from its own saved step (a hand-written loop; `Stage.resume_checkpoint`).

    from rucai.runtime.stages import Stage

    def pretrain(stage: Stage) -> dict: ...        # writes into stage.dir, returns its result
    summary = Stage(cfg, "pretrain").run(pretrain)

Only rank zero writes the done record; every rank runs the stage. The record also keeps the
settings the stage ran under (`method`, `data`, `model`, `item_tokenizer`, flattened); a stage reused
under different settings logs a warning that names each changed key (the result is still reused:
stages are shared across seeds and runs on purpose; a new run dir or deleting the stage's folder
recomputes it).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

log = logging.getLogger(__name__)

DONE = "done.json"
SETTINGS_GROUPS = ("method", "data", "model", "item_tokenizer")


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out |= _flat(v, f"{prefix}{k}.")
        return out
    return {prefix[:-1]: node}


def stage_settings(cfg: Any) -> dict[str, Any]:
    """The flattened, resolved settings groups of `cfg` (a group that cannot be resolved is skipped)."""
    from omegaconf import OmegaConf

    out: dict[str, Any] = {}
    for g in SETTINGS_GROUPS:
        node = cfg.get(g) if hasattr(cfg, "get") else None
        if node is None:
            continue
        try:
            value = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
        except Exception:  # noqa: BLE001 - an unresolvable interpolation: no record of this group
            continue
        out |= _flat(json.loads(json.dumps(value, default=str)), f"{g}.")
    return out


def changed_settings(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """'key (was A, now B)' for every key whose value differs (added or removed keys included)."""
    keys = sorted(set(before) | set(now))
    return [f"{k} (was {before.get(k, '<unset>')}, now {now.get(k, '<unset>')})" for k in keys
            if before.get(k, "<unset>") != now.get(k, "<unset>")]


def is_rank_zero() -> bool:
    """True in the process that writes run records: global rank 0 of a distributed run (torchrun's
    RANK, a SLURM job's task id when it has several tasks, Lightning's rank once a strategy set it
    up); always true outside distributed runs."""
    import os

    if "RANK" in os.environ and os.environ.get("WORLD_SIZE", "1") != "1":
        return int(os.environ["RANK"]) == 0
    if "SLURM_PROCID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return int(os.environ["SLURM_PROCID"]) == 0
    try:
        from lightning.fabric.utilities.rank_zero import rank_zero_only

        return getattr(rank_zero_only, "rank", 0) == 0
    except ImportError:
        return True


class Stage:
    """A named stage of a run: its folder, done record and resume checkpoint."""

    def __init__(self, cfg: DictConfig, name: str, dir: str | Path | None = None) -> None:
        self.cfg = cfg
        self.name = name
        self.dir = Path(dir) if dir else Path(cfg.paths.output_dir) / name

    @property
    def ckpt_dir(self) -> Path:
        return self.dir / "checkpoints"

    @property
    def done_path(self) -> Path:
        return self.dir / DONE

    def done(self) -> dict[str, Any] | None:
        """The stage's result when it completed earlier, else None."""
        if self.done_path.is_file():
            return json.loads(self.done_path.read_text())["result"]
        return None

    def wait_done(self, timeout_s: float = 600.0) -> dict[str, Any] | None:
        """The stage's result once rank zero has recorded it (ranks > 0 of a stage run in a
        sub-process may return before rank zero writes the record); None after `timeout_s`."""
        t0 = time.perf_counter()
        while (result := self.done()) is None and time.perf_counter() - t0 < timeout_s:
            time.sleep(1.0)
        return result

    def resume_checkpoint(self) -> str | None:
        """`ckpt_path=last` -> this stage's `checkpoints/last.ckpt` when it exists, else None."""
        from rucai.runtime import resume_checkpoint

        if self.cfg.get("ckpt_path") not in (None, "", "null", "last"):
            return None  # an explicit checkpoint file belongs to a single-stage task, not to a pipeline
        return resume_checkpoint(self.cfg, self.ckpt_dir)

    def finish(self, result: dict[str, Any], seconds: float | None = None) -> dict[str, Any]:
        from rucai.utils.io import atomic_write_json

        if is_rank_zero():
            atomic_write_json(self.done_path, {"stage": self.name, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                               "seconds": seconds, "result": result,
                                               "settings": stage_settings(self.cfg)})
        return result

    def warn_if_settings_changed(self) -> list[str]:
        """Log (and return) the settings that differ from those the done record was written under."""
        if not self.done_path.is_file():
            return []
        recorded = json.loads(self.done_path.read_text()).get("settings")
        if recorded is None:
            return []
        diff = changed_settings(recorded, stage_settings(self.cfg))
        if diff:
            shown = "; ".join(diff[:5]) + (f"; and {len(diff) - 5} more" if len(diff) > 5 else "")
            log.warning("stage %s: reusing %s, recorded under other settings: %s. To recompute it, use a new "
                        "run dir or delete that folder", self.name, self.dir, shown)
        return diff

    def run(self, fn: Callable[[Stage], dict[str, Any]]) -> dict[str, Any]:
        """Reuse the stage's result when done; else run `fn(self)` and record its result."""
        prior = self.done()
        if prior is not None:
            log.info("stage %s: reusing %s", self.name, self.dir)
            self.warn_if_settings_changed()
            return prior
        self.dir.mkdir(parents=True, exist_ok=True)
        log.info("stage %s: running in %s", self.name, self.dir)
        t0 = time.perf_counter()
        result = fn(self)
        return self.finish(result, round(time.perf_counter() - t0, 2))
