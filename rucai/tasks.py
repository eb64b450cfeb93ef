"""Core tasks: `train` (fit, then test the best checkpoint) and `evaluate` (test a checkpoint).

Every run writes into its own Hydra output directory: `config_resolved.yaml`, `metrics.json`
(atomic), `eval/{val,test}.csv`, `checkpoints/` and the loggers' folders.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from rucai.errors import UserError
from rucai.registry import task

log = logging.getLogger(__name__)


def build(cfg: DictConfig, item_features: Any = None, model_init: Any = None):
    """(datamodule, model, trainer) from the composed config, through the runtime.

    `item_features(data) -> dict`: extra model arguments computed from the loaded data (a paper's
    item-side inputs, e.g. CoCoRec's code tokens and text vectors, `rucai.cocorec.tasks`);
    `model_init(model)`: run on the new model before training (initial weights)."""
    from hydra.utils import instantiate

    from rucai import runtime
    from rucai.runtime import hardware

    runtime.route_library_logs()
    hardware.check(cfg.hardware)
    runtime.seed(cfg)
    dm = instantiate(cfg.data, _convert_="all")
    dm.setup("fit")
    if getattr(dm, "stats", None):
        log.info("data: %s", dm.stats)
    extra = dm.model_kwargs() if hasattr(dm, "model_kwargs") else {}
    if cfg.get("item_tokenizer"):  # generative rec: items as code tuples (rucai.rec.tokenization)
        from rucai.rec.tokenization import item_codes

        extra["item_codes"] = item_codes(cfg.item_tokenizer, dm.data)
    if item_features is not None:
        extra |= item_features(dm.data)
    model = instantiate(cfg.model, _convert_="all", **extra)
    if model_init is not None:  # e.g. weights pre-trained elsewhere (UTGRec's source-domain recommender)
        model_init(model)
    return dm, model, runtime.trainer(cfg)


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


def _full_validation(trainer, model, dm) -> dict[str, float]:
    """The best checkpoint on every validation user, when training validated on `data.val_users`
    (reported as `val_full/*`; the per-epoch CSV keeps the subset's rows)."""
    from rucai.callbacks import EvalCSV

    best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
    csvs = [c for c in trainer.callbacks if isinstance(c, EvalCSV)]
    for c in csvs:
        c.val_file = "val_full"
    try:
        res = trainer.validate(model, dataloaders=dm.full_val_dataloader(), ckpt_path=best, verbose=False)
    finally:
        for c in csvs:
            c.val_file = "val"
    return {k.replace("val/", "val_full/", 1): float(v) for k, v in (res[0] if res else {}).items()}


@task("train")
def train(cfg: DictConfig) -> dict[str, Any]:
    return fit_and_test(cfg)


def fit_and_test(cfg: DictConfig, item_features: Any = None, model_init: Any = None) -> dict[str, Any]:
    """The `train` task's body (fit with resume, re-validate, test the best checkpoint); papers whose
    models need item-side inputs call it with `item_features` (see `build`)."""
    from rucai import runtime

    output_dir = Path(cfg.paths.output_dir)
    dm, model, trainer = build(cfg, item_features, model_init)
    probe = runtime.probe(trainer)
    ckpt = runtime.resume_checkpoint(cfg, output_dir / "checkpoints")
    metrics: dict[str, Any] = {}
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
        if getattr(dm, "val_users", None) and not trainer.interrupted:
            metrics |= _full_validation(trainer, model, dm)
        if trainer.interrupted:
            metrics["status"] = "interrupted"
            log.warning("training was interrupted; resume with ckpt_path=last hydra.run.dir=%s", output_dir)
            return metrics
    if cfg.test:
        best = getattr(trainer.checkpoint_callback, "best_model_path", "") if cfg.train else ""
        test_ckpt = best or (ckpt if not cfg.train else None)
        if cfg.train and not best:
            log.warning("no best checkpoint recorded; testing the current weights")
        from rucai.runtime.hardware import consolidated_test_checkpoint

        test_ckpt = consolidated_test_checkpoint(trainer, test_ckpt)
        results = trainer.test(model, datamodule=dm, ckpt_path=test_ckpt, verbose=False)
        metrics |= _scalars(results[0] if results else {})
        metrics["test_ckpt"] = test_ckpt
    metrics["total_seconds"] = round(time.perf_counter() - t0, 2)
    return metrics


@task("evaluate")
def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test a trained checkpoint (`ckpt_path=<file>`) on the configured data."""
    return evaluate_checkpoint(cfg)


def evaluate_checkpoint(cfg: DictConfig, item_features: Any = None) -> dict[str, Any]:
    """The `evaluate` task's body (`item_features`: see `build`)."""
    from rucai import runtime

    if not cfg.ckpt_path:
        raise UserError("task=evaluate needs ckpt_path=<path to a .ckpt file>")
    output_dir = Path(cfg.paths.output_dir)
    dm, model, trainer = build(cfg, item_features)
    ckpt = runtime.resume_checkpoint(cfg, output_dir / "checkpoints")
    from rucai.runtime.hardware import consolidated_test_checkpoint

    ckpt = consolidated_test_checkpoint(trainer, ckpt)
    results = trainer.test(model, datamodule=dm, ckpt_path=ckpt, verbose=False)
    return {"test_ckpt": ckpt} | _scalars(results[0] if results else {})
