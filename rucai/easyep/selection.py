"""Expert selection from score matrices, the keep-mask JSON, and the baselines.

`keep` everywhere is {MoE layer index: sorted list of expert ids to keep}. The mask JSON written by
the scoring task is {"layers": [...], "num_experts": E, "mask": [[0/1]*E per layer], "keep": {...}};
`load_keep` also reads the authors' bare format (a list of 0/1 rows, one per MoE layer, layers
numbered from `first_layer`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from rucai.errors import UserError


def topk_keep(scores: torch.Tensor, layers: list[int], k: int) -> dict[int, list[int]]:
    """Top-k experts per layer (same k in every MoE layer); ties broken by the lower id."""
    if not 0 < k <= scores.shape[1]:
        raise UserError(f"keep k={k} experts per layer must be in 1..{scores.shape[1]}")
    out = {}
    for row, li in zip(scores, layers, strict=True):
        # stable: sort by (-score, id)
        order = sorted(range(row.numel()), key=lambda i: (-float(row[i]), i))
        out[int(li)] = sorted(order[:k])
    return out


def normalise_rows(scores: torch.Tensor) -> torch.Tensor:
    """Each layer's row sums to 1 (the authors' mixed-domain normalisation); all-zero rows stay 0."""
    s = scores.double()
    tot = s.sum(dim=-1, keepdim=True)
    return torch.where(tot > 0, s / tot.clamp_min(1e-300), torch.zeros_like(s))


def mix_domains(score_list: list[torch.Tensor]) -> torch.Tensor:
    """Mixed-domain score: row-normalise each domain's matrix, then sum over domains."""
    if not score_list:
        raise UserError("mixed-domain selection needs at least one domain's scores")
    shapes = {tuple(s.shape) for s in score_list}
    if len(shapes) != 1:
        raise UserError(f"domain score matrices differ in shape: {sorted(shapes)}")
    return torch.stack([normalise_rows(s) for s in score_list]).sum(dim=0)


def random_keep(layers: list[int], num_experts: int, k: int, seed: int = 0) -> dict[int, list[int]]:
    g = torch.Generator().manual_seed(int(seed))
    return {int(li): sorted(torch.randperm(num_experts, generator=g)[:k].tolist()) for li in layers}


def keep_from_method(method: str, scores: Any, k: int, seed: int = 0) -> dict[int, list[int]]:
    """`method`: easyep | frequency | gate | random (scores: a `Scores`)."""
    if method == "random":
        return random_keep(scores.layers, scores.easyep.shape[1], k, seed)
    if method not in ("easyep", "frequency", "gate"):
        raise UserError(f"unknown selection method {method!r}; use easyep, frequency, gate or random")
    return topk_keep(scores.by_name(method), scores.layers, k)


def keep_to_mask(keep: dict[int, list[int]], num_experts: int) -> dict[str, Any]:
    layers = sorted(keep)
    mask = [[1 if e in set(keep[li]) else 0 for e in range(num_experts)] for li in layers]
    return {"layers": layers, "num_experts": num_experts, "mask": mask,
            "keep": {str(li): list(keep[li]) for li in layers}}


def save_keep(path: str | Path, keep: dict[int, list[int]], num_experts: int, **extra: Any) -> Path:
    from rucai.utils.io import atomic_write_json

    return atomic_write_json(path, keep_to_mask(keep, num_experts) | extra)


def load_keep(keep: Any, first_layer: int | None = None) -> dict[int, list[int]]:
    """A keep mapping from a dict, a mask-JSON path, or the authors' bare list-of-rows mask.

    The authors' mask has one row per MoE layer and no layer numbers: pass `first_layer`
    (DeepSeek-V3/R1: 3, its `first_k_dense_replace`).
    """
    if isinstance(keep, str | Path):
        p = Path(keep)
        if not p.is_file():
            raise UserError(f"keep mask {p} not found; give a mask JSON written by easyep.score or a dict")
        keep = json.loads(p.read_text())
    if isinstance(keep, list):
        if first_layer is None:
            raise UserError("a bare list-of-rows mask has no layer numbers; pass first_layer (DeepSeek-R1: 3)")
        return {first_layer + i: [e for e, v in enumerate(row) if v] for i, row in enumerate(keep)}
    if isinstance(keep, dict) and "keep" in keep:
        keep = keep["keep"]
    if not isinstance(keep, dict):
        raise UserError(f"cannot read a keep mapping from {type(keep).__name__}")
    out = {}
    for k, v in keep.items():
        ids = sorted(int(x) for x in v)
        if len(set(ids)) != len(ids):
            raise UserError(f"layer {k}: duplicate expert ids in keep list")
        out[int(k)] = ids
    return out
