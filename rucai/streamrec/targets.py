"""Stage 1's training targets: the codes of items similar to the target, then the target's codes.

Similarity: cosine between item text embeddings (the tokenizer's encoder); an item is never its own
neighbour. `order=nearest_last` (ours) puts the most similar item next to the target, so the output
moves from further to nearer items and ends on the target; `nearest_first` reverses it.
"""

from __future__ import annotations

import numpy as np
import torch

ORDERS = ("nearest_last", "nearest_first")


def similar_items(emb: np.ndarray, k: int, batch: int = 4096) -> np.ndarray:
    """[N+1, k] item ids (1-based; row 0 = padding -> 0): each item's `k` nearest other items by
    cosine of `emb` ([N+1, D], row 0 unused), nearest first; ties broken by the lower id."""
    x = np.asarray(emb, dtype=np.float32)[1:]
    n = len(x)
    if not 0 < k < n:
        raise ValueError(f"similar_items k={k} needs 0 < k < {n} items")
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    out = np.zeros((n + 1, k), dtype=np.int64)
    for s in range(0, n, batch):
        sim = x[s:s + batch] @ x.T
        rows = np.arange(len(sim))
        sim[rows, s + rows] = -np.inf  # not itself
        # stable descending order: -sim ascending with a stable sort keeps lower ids first on ties
        top = np.argsort(-sim, axis=1, kind="stable")[:, :k]
        out[s + 1:s + 1 + len(sim)] = top + 1
    return out


def extended_labels(item2tok: torch.Tensor, similar: torch.Tensor, target: torch.Tensor, eos: int,
                    order: str = "nearest_last") -> torch.Tensor:
    """Decoder labels [B, (k + 1) * L + 1]: the L code tokens of each of the target's k similar items
    (`similar` [N+1, k], nearest first), then the target's L tokens, then eos."""
    if order not in ORDERS:
        raise ValueError(f"order={order!r}; use one of {ORDERS}")
    sim = similar[target]  # [B, k], nearest first
    if order == "nearest_last":
        sim = sim.flip(1)
    parts = [item2tok[sim].flatten(1), item2tok[target], target.new_full((len(target), 1), eos)]
    return torch.cat(parts, 1)
