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
