"""Callbacks every training run gets: per-evaluation CSVs and a record of where training started."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L

from rucai.utils.io import append_csv_row, drop_csv_rows


def _scalars(metrics: dict, prefix: str) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if k.startswith(prefix) and getattr(v, "numel", lambda: 1)() == 1}


class EvalCSV(L.Callback):
    """Append one row per validation/test evaluation to `<dirpath>/{val,test}.csv`."""

    def __init__(self, dirpath: str):
        self.dirpath = Path(dirpath)
        self.val_file = "val"  # a final validation outside `fit` may write elsewhere (val_full)

    def _write(self, trainer: L.Trainer, split: str, prefix: str) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        row = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        row |= _scalars(trainer.callback_metrics, prefix)
        append_csv_row(self.dirpath / f"{split}.csv", row)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """A resumed fit repeats the epoch it resumes in: rows from that epoch on (written by the attempt
        that stopped before saving its checkpoint) are dropped, so each epoch keeps exactly one row."""
        if trainer.is_global_zero and trainer.current_epoch > 0:
            epoch = trainer.current_epoch
            drop_csv_rows(self.dirpath / "val.csv", lambda r: r.get("epoch", "").isdigit() and int(r["epoch"]) >= epoch)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, self.val_file, "val/")

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
        # a run resumed mid-epoch gets no on_train_epoch_start for that epoch: time it from here
        self._t0 = self._t_last = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = self._t_last = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._t_last = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the last training batch's end: validation (run before this hook) is not counted
        self.epoch_seconds.append(self._t_last - self._t0)


class RNGState(L.Callback):
    """Saves the Python, NumPy and torch RNG states in every checkpoint and restores them on resume,
    so a run resumed at an epoch boundary draws the same shuffles and dropout masks as one that
    never stopped."""

    def state_dict(self) -> dict:
        import random

        import numpy as np
        import torch

        kind, keys, pos, has_gauss, cached = np.random.get_state()
        # plain lists and tensors: checkpoints load with torch.load(weights_only=True)
        state = {"python": random.getstate(), "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos),
                                                        int(has_gauss), float(cached)],
                 "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        import random

        import numpy as np
        import torch

        random.setstate(state_dict["python"])
        kind, keys, pos, has_gauss, cached = state_dict["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        torch.set_rng_state(state_dict["torch"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


class SignalCheckpoint(L.Callback):
    """Saves `<dirpath>/last.ckpt` when SLURM's pre-timeout signal (submitit: SIGUSR2) or SIGTERM
    arrives, mid-epoch, at the end of the training batch in flight (at the end of the epoch, after its
    validation, when that batch is the last); then hands the signal to the
    handler that was installed before (submitit requeues the job, Lightning stops on SIGTERM); see
    `rucai.runtime.signals`. A requeued job rerun with `ckpt_path=last` continues from that step,
    so a slow allocation still makes progress between requeues."""

    def __init__(self, dirpath: str, signals: tuple[str, ...] = ("SIGUSR2", "SIGTERM")) -> None:
        from rucai.runtime.signals import PendingSignals

        self.dirpath = Path(dirpath)
        self.signals = PendingSignals(signals)
        self.saved_at_step: int | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.signals.install()  # after Lightning's own SIGTERM handler, which it then forwards to

    def _handle_pending(self, trainer: L.Trainer) -> None:
        import logging

        if self.signals.pending is None:
            return
        path = self.dirpath / "last.ckpt"
        trainer.save_checkpoint(str(path))
        self.saved_at_step = trainer.global_step
        logging.getLogger(__name__).warning("signal %d: saved %s at step %d", self.signals.pending, path,
                                            trainer.global_step)
        self.signals.forward()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # Not at the epoch's last batch: Lightning resumes a checkpoint saved at that batch's end in the
        # next epoch, so the validation of this one would never run. The save waits for the epoch's end
        # (after its validation): `slurm.signal_delay_s` must cover one validation.
        if batch_idx + 1 >= trainer.num_training_batches:
            return
        self._handle_pending(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._handle_pending(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.signals.restore()
