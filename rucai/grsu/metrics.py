"""Ranking metrics of GRSU (SIGIR 2025), after ``src/task/base_task.py`` of RUCAIBox/GRSU.

Each label of a turn is one evaluation instance: for a label at 0-based position ``r`` of the
ranked list, ``Recall@k = 1[r < k]``, ``NDCG@k = 1/log2(r + 2) * 1[r < k]`` (one relevant item, so
the ideal DCG is 1) and ``MRR@k = 1/(r + 1) * 1[r < k]``; a label not in the list scores 0.

Averaging (checked in the authors' code): ``BaseTask.cal_metric`` takes ``np.mean`` over the
labels of ONE turn, and ``Agent.run`` (``src/infer/main.py``) then takes ``np.mean`` over turns.
So the released numbers are a per-turn mean of per-label scores (macro over turns), not a flat
mean over all labels. :func:`mean_metrics` does the authors' ``per="turn"`` by default and offers
``per="label"`` (flat mean over every label of every turn).

Deviation (a bug in the released code): in ``cal_metric`` the NDCG and MRR loops reuse
``pred_k_list`` left over from the Recall loop, i.e. the top-``k_list[-1]`` (=50) list, so
``NDCG@k``/``MRR@k`` are NDCG@50/MRR@50 for every ``k``. :func:`rank_metrics` cuts each metric
at its own ``k``; :func:`released_metrics` reproduces the released behaviour for comparison.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

__all__ = ["KS", "rank_metrics", "released_metrics", "mean_metrics"]

KS: tuple[int, ...] = (1, 5, 10, 20, 50)


def _rank(ranked: Sequence[int], label: int) -> int | None:
    """0-based position of the first occurrence of ``label`` in ``ranked`` (None if absent)."""
    try:
        return list(ranked).index(label)
    except ValueError:
        return None


def _scores(rank: int | None, cut: int) -> tuple[float, float, float]:
    """(hit, ndcg, rr) of a label at ``rank`` in a list truncated to ``cut`` items."""
    if rank is None or rank >= cut:
        return 0.0, 0.0, 0.0
    return 1.0, 1.0 / math.log2(rank + 2), 1.0 / (rank + 1)


def rank_metrics(ranked: list[int], labels: list[int], ks: Sequence[int] = KS) -> dict[str, list[float]]:
    """``Recall@k``, ``NDCG@k``, ``MRR@k`` for every ``k`` in ``ks``: one value per label (in order).

    Each metric is computed on ``ranked[:k]`` at its own ``k`` (the fix of the released bug).
    """
    out: dict[str, list[float]] = {}
    ranks = [_rank(ranked, label) for label in labels]
    for name, idx in (("Recall", 0), ("NDCG", 1), ("MRR", 2)):
        for k in ks:
            out[f"{name}@{k}"] = [_scores(r, k)[idx] for r in ranks]
    return out


def released_metrics(ranked: list[int], labels: list[int], ks: Sequence[int] = KS) -> dict[str, list[float]]:
    """The released ``cal_metric``: Recall at its own ``k``, but NDCG and MRR at EVERY ``k`` on
    ``ranked[:ks[-1]]`` (the loop variable left over from the Recall loop). Only for tests."""
    out: dict[str, list[float]] = {}
    ranks = [_rank(ranked, label) for label in labels]
    for k in ks:
        out[f"Recall@{k}"] = [_scores(r, k)[0] for r in ranks]
    last = ks[-1]
    for name, idx in (("NDCG", 1), ("MRR", 2)):
        for k in ks:
            out[f"{name}@{k}"] = [_scores(r, last)[idx] for r in ranks]
    return out


def mean_metrics(list_of_dicts: Iterable[Mapping[str, Sequence[float]]], per: str = "turn") -> dict[str, float]:
    """Average a list of :func:`rank_metrics` outputs (one per turn).

    ``per="turn"`` (the authors'): mean over each turn's labels, then mean over turns.
    ``per="label"``: flat mean over all labels. A turn with no labels is skipped.
    """
    if per not in ("turn", "label"):
        raise ValueError(f"per must be 'turn' or 'label', not {per!r}")
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for d in list_of_dicts:
        for key, vals in d.items():
            if len(vals) == 0:
                continue
            if per == "turn":
                sums[key] = sums.get(key, 0.0) + sum(vals) / len(vals)
                counts[key] = counts.get(key, 0) + 1
            else:
                sums[key] = sums.get(key, 0.0) + sum(vals)
                counts[key] = counts.get(key, 0) + len(vals)
    return {key: sums[key] / counts[key] for key in sums}
