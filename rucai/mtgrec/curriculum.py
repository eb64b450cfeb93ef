"""Curriculum pre-training callback: after each stage, data-group influence -> sampling probabilities.

Mirrors the authors' `main_less.py` loop: stages of epochs (`epoch_per_stage`), after each stage
the train gradients of every tokenizer's data group (Adam-preconditioned with the current optimizer
moments) and the validation gradients under every tokenizer, I_s = Gamma G_val^T, the stage weight
= the learning rate at that point, I = sum_s w_s I_s / sum_s w_s, p = softmax(mean_j I / tau).
With `curriculum=False` (ablation) nothing is computed and sampling stays uniform.

Works under DDP: each rank takes its shard of the influence examples and the gradient sums are
all-reduced (`influence.group_mean_gradient`).

The callback's state (per-stage influence matrices, their learning-rate weights, the history rows,
the stage index and the current probabilities) is saved in every Lightning checkpoint, so a run
resumed from `last.ckpt` continues the curriculum exactly where it stopped.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Subset

from rucai.mtgrec.influence import (
    accumulate,
    adam_precondition,
    flat_adam_state,
    group_mean_gradient,
    influence_matrix,
    sampling_probs,
)
from rucai.utils.io import atomic_write_json

log = logging.getLogger(__name__)


def subset_indices(n: int, limit: int | None, seed: int) -> list[int]:
    """All of range(n), or a fixed random `limit` of them (sorted)."""
    if limit is None or limit >= n:
        return list(range(n))
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n, generator=g)[:limit].tolist())


class CurriculumCallback(L.Callback):
    def __init__(
        self,
        stages: list[int],
        tau: float,
        train_set,
        val_set,
        collate_fn,
        batch_size: int,
        out_file: str | Path,
        curriculum: bool = True,
        train_mode: bool = True,
    ):
        self.stage_ends = [int(sum(stages[: i + 1])) for i in range(len(stages))]
        self.tau, self.curriculum, self.train_mode = float(tau), curriculum, train_mode
        self.train_set, self.val_set = train_set, val_set
        self.collate_fn, self.batch_size = collate_fn, batch_size
        self.out_file = Path(out_file)
        self.stage_scores: list[torch.Tensor] = []
        self.weights: list[float] = []
        self.history: list[dict[str, Any]] = []
        self.probs: list[float] | None = None  # the sampling probabilities after the last stage
        self.start_epoch: int | None = None  # where this fit started (non-zero after a resume)
        self.start_step: int | None = None

    # -- checkpointed state ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"stage": len(self.history), "probs": self.probs, "history": self.history,
                "stage_scores": [s.clone() for s in self.stage_scores], "weights": list(self.weights)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.stage_scores = [torch.as_tensor(s) for s in state_dict["stage_scores"]]
        self.weights = [float(w) for w in state_dict["weights"]]
        self.history = list(state_dict["history"])
        self.probs = state_dict["probs"]
        if int(state_dict["stage"]) != len(self.history):
            raise ValueError(f"curriculum checkpoint: stage {state_dict['stage']} but {len(self.history)} history rows")

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        self.start_epoch, self.start_step = trainer.current_epoch, trainer.global_step
        if self.probs is not None:  # resumed: the model's buffer holds them already; keep both in step
            pl_module.select_prob.copy_(torch.tensor(self.probs, dtype=pl_module.select_prob.dtype))
        if self.start_step:
            log.info("curriculum: resumed at epoch %d, step %d, stage %d, probs %s", self.start_epoch,
                     self.start_step, len(self.history), [round(p, 4) for p in pl_module.select_prob.tolist()])

    def _loader(self, ds, rank: int, world: int) -> DataLoader:
        shard = Subset(ds, list(range(rank, len(ds), world)))
        return DataLoader(shard, batch_size=self.batch_size, shuffle=False, collate_fn=self.collate_fn)

    def _to(self, batch: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
        return {k: v.to(device) for k, v in batch.items()}

    def compute(self, trainer: L.Trainer, model) -> dict[str, Any]:
        """One stage's influence matrix, the accumulated one and the new probabilities."""
        opt = trainer.optimizers[0]
        params = [p for p in model.parameters() if p.requires_grad]
        m, v = flat_adam_state(opt, params)
        lr = float(opt.param_groups[0]["lr"])
        rank, world = trainer.global_rank, trainer.world_size
        was = model.training
        model.train(self.train_mode)
        t0 = time.perf_counter()
        K = model.num_tokenizers
        gammas, vals = [], []
        with torch.enable_grad():
            for i in range(K):
                batches = (self._to(b, model.device) for b in self._loader(self.train_set, rank, world))
                g = group_mean_gradient(partial(model.loss_sum, tok=i), batches, params)
                gammas.append(adam_precondition(g, m, v))
            t_train = time.perf_counter() - t0
            for j in range(K):
                batches = (self._to(b, model.device) for b in self._loader(self.val_set, rank, world))
                vals.append(group_mean_gradient(partial(model.loss_sum, tok=j), batches, params))
        model.train(was)
        stage = influence_matrix(torch.stack(gammas), torch.stack(vals)).cpu()
        self.stage_scores.append(stage)
        self.weights.append(lr)
        acc = accumulate(self.stage_scores, self.weights)
        probs = sampling_probs(acc, self.tau)
        return {
            "stage_influence": stage.tolist(),
            "accumulated_influence": acc.tolist(),
            "mean_influence": acc.mean(-1).tolist(),
            "lr_weight": lr,
            "probs": probs.tolist(),
            "influence_seconds": round(time.perf_counter() - t0, 2),
            "train_grad_seconds": round(t_train, 2),
            "influence_train_examples": len(self.train_set),
            "influence_val_examples": len(self.val_set),
        }

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        epoch = trainer.current_epoch + 1
        if epoch not in self.stage_ends or trainer.sanity_checking:
            return
        if self.history and self.history[-1]["epoch"] == epoch:  # resumed from a checkpoint saved after it
            return
        row: dict[str, Any] = {"stage": self.stage_ends.index(epoch), "epoch": epoch,
                               "probs_before": pl_module.select_prob.tolist()}
        if self.curriculum and pl_module.num_tokenizers > 1:
            row |= self.compute(trainer, pl_module)
            pl_module.select_prob.copy_(torch.tensor(row["probs"], dtype=pl_module.select_prob.dtype))
        else:
            row["probs"] = pl_module.select_prob.tolist()
        log.info("curriculum stage %d (epoch %d): probs %s", row["stage"], epoch,
                 [round(p, 4) for p in row["probs"]])
        self.history.append(row)
        self.probs = [float(p) for p in row["probs"]]
        if trainer.is_global_zero:
            atomic_write_json(self.out_file, self.history)


def snapshot_path(dir: str | Path, epoch: int) -> Path:
    """Where pre-training keeps the T5 weights after `epoch` epochs (1-based, the authors' `_{epoch}.pth`)."""
    return Path(dir) / f"t5_ep{int(epoch):03d}.pt"


class T5Snapshots(L.Callback):
    """Keeps the T5 weights after each epoch in `epochs` (the authors' `save_interval` checkpoints that
    finetune.sh fine-tunes): `{"t5": state_dict, "epoch": E}` in `snapshot_path(dir, E)`, rank zero only."""

    def __init__(self, dir: str | Path, epochs: list[int]):
        self.dir, self.epochs = Path(dir), {int(e) for e in epochs}

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        from rucai.utils.io import atomic_writer

        epoch = trainer.current_epoch + 1
        if epoch not in self.epochs or trainer.sanity_checking or not trainer.is_global_zero:
            return
        with atomic_writer(snapshot_path(self.dir, epoch), "wb") as f:
            torch.save({"t5": pl_module.t5_state(), "epoch": epoch}, f)
