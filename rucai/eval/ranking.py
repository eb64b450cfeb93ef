"""Full-ranking top-K metrics for next-item recommendation (one held-out target per user).

With a single relevant item, Recall@K equals HitRatio@K and NDCG@K = 1 / log2(rank + 2) when the
0-based rank is below K. Ties are broken pessimistically: the rank counts every other item whose
score is >= the target's, so a constant scorer gets no credit.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def target_ranks(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """0-based rank of `target[b]` among `scores[b]` (higher score = better), pessimistic ties.

    Items with score -inf (padding, masked history) never outrank the target.
    """
    tgt = scores.gather(1, target.view(-1, 1))
    better = (scores >= tgt) & torch.isfinite(scores)
    return better.sum(dim=1) - 1  # the target itself is counted once


def topk_metrics(ranks: torch.Tensor, ks: Iterable[int]) -> dict[str, torch.Tensor]:
    """Per-example Recall@K and NDCG@K (float tensors of shape [B])."""
    ranks = ranks.float()
    out: dict[str, torch.Tensor] = {}
    for k in ks:
        hit = (ranks < k).float()
        out[f"recall@{k}"] = hit
        out[f"ndcg@{k}"] = hit / torch.log2(ranks + 2.0)
    return out


def auc(positive: list[float], negative: list[float]) -> float:
    """ROC AUC = P(a positive scores above a negative), ties counting 1/2 (the Mann-Whitney U
    statistic over all pairs, by binary search in the sorted negatives)."""
    if not positive or not negative:
        raise ValueError("auc needs at least one positive and one negative score")
    import numpy as np

    pos, neg = np.asarray(positive, dtype=np.float64), np.sort(np.asarray(negative, dtype=np.float64))
    below = np.searchsorted(neg, pos, side="left")  # negatives strictly below each positive
    ties = np.searchsorted(neg, pos, side="right") - below
    return float((below + 0.5 * ties).sum() / (len(pos) * len(neg)))
