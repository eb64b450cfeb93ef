"""Base LightningModule for next-item recommenders trained with full-softmax cross-entropy.

Subclasses implement `encode(seq, lengths) -> [B, H]` (the user state after the history) and
`item_embeddings() -> [N+1, H]` (row 0 = padding). Training: cross-entropy over all items.
Evaluation: full ranking over all items (no sampled negatives), Recall@K and NDCG@K.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
import torch.nn.functional as F

from rucai.errors import UserError
from rucai.eval.ranking import target_ranks, topk_metrics


class SeqRecModule(L.LightningModule):
    # Training softmax over all N+1 rows including the padding row 0 (RecBole's CE loss scores
    # `item_embedding.weight` whole); False scores row 0 at -inf. Evaluation always excludes row 0.
    softmax_includes_padding: bool = False

    def __init__(
        self,
        num_items: int,
        max_len: int = 20,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        topk: Sequence[int] = (5, 10, 20),
        mask_history: bool = False,
    ):
        super().__init__()
        self.num_items = num_items
        self.max_len = max_len
        self.lr = lr
        self.weight_decay = weight_decay
        self.topk = tuple(topk)
        # Mask already-seen items at ranking time (RecBole does so for general models only; its
        # sequential models and the TIGER-style papers rank the history too).
        self.mask_history = mask_history

    # -- to implement -------------------------------------------------------------------------
    def encode(self, seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def item_embeddings(self) -> torch.Tensor:
        raise NotImplementedError

    def encode_all(self, seq: torch.Tensor) -> torch.Tensor:
        """Causal models: the state after every position, [B, T, H] (for `data.train_mode=all_positions`)."""
        raise UserError(f"{type(self).__name__} cannot train on all positions; use data.train_mode=prefix")

    # -- shared logic -------------------------------------------------------------------------
    def full_scores(self, seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        scores = self.encode(seq, lengths) @ self.item_embeddings().T  # [B, N+1]
        scores[:, 0] = float("-inf")
        return scores

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if "targets" in batch:  # all-positions windows: every position with a target is one sample
            targets = batch["targets"]
            keep = targets > 0
            h = self.encode_all(batch["seq"])[keep]  # [n_targets, H]
            target = targets[keep]
        else:
            h = self.encode(batch["seq"], batch["lengths"])
            target = batch["target"]
        scores = h @ self.item_embeddings().T  # [n, N+1]
        if not self.softmax_includes_padding:
            scores[:, 0] = float("-inf")
        loss = F.cross_entropy(scores.float(), target)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(target))
        return loss

    def _evaluate(self, batch: dict[str, torch.Tensor], prefix: str) -> None:
        scores = self.full_scores(batch["seq"], batch["lengths"]).float()
        if self.mask_history:
            hist = batch["seq"].clone()
            hist[hist == batch["target"].unsqueeze(1)] = 0  # never mask the target itself
            scores.scatter_(1, hist, float("-inf"))
            scores[:, 0] = float("-inf")
        ranks = target_ranks(scores, batch["target"])
        bsz = len(ranks)
        for name, values in topk_metrics(ranks, self.topk).items():
            self.log(f"{prefix}/{name}", values.mean(), on_epoch=True, batch_size=bsz, sync_dist=True,
                     prog_bar=name == "ndcg@10")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def configure_optimizers(self):
        from rucai.runtime.hardware import adam

        return adam(self, self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
