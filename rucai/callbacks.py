"""Callbacks every training run gets: per-evaluation CSVs and a record of where training started."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L

from rucai.utils.io import append_csv_row


def _scalars(metrics: dict, prefix: str) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if k.startswith(prefix) and getattr(v, "numel", lambda: 1)() == 1}


class EvalCSV(L.Callback):
    """Append one row per validation/test evaluation to `<dirpath>/{val,test}.csv`."""

    def __init__(self, dirpath: str):
        self.dirpath = Path(dirpath)

    def _write(self, trainer: L.Trainer, split: str, prefix: str) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        row = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        row |= _scalars(trainer.callback_metrics, prefix)
        append_csv_row(self.dirpath / f"{split}.csv", row)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, "val", "val/")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, "test", "test/")


class StartEpoch(L.Callback):
    """Remembers the epoch at which `fit` started (non-zero after a resume) and times each
    training epoch (training only, validation excluded)."""

    def __init__(self) -> None:
        self.start_epoch: int | None = None
        self.epoch_seconds: list[float] = []
        self._t0 = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start_epoch = trainer.current_epoch

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = self._t_last = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._t_last = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the last training batch's end: validation (run before this hook) is not counted
        self.epoch_seconds.append(self._t_last - self._t0)
