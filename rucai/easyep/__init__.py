"""EASY-EP: few-shot expert pruning of MoE LLMs (Dong et al., 2025; RUCAIBox/EASYEP).

Score routed experts on a few in-domain demonstrations (`scoring`), keep the top-k per layer
(`selection`), and write a pruned Hugging Face checkpoint shard by shard (`prune`). Importing
this package is cheap: torch/safetensors load only when a function runs.

    from rucai.easyep import prune_checkpoint
    prune_checkpoint("DeepSeek-R1", "DeepSeek-R1-half", "mask.json")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def prune_checkpoint(src_dir: str | Path, dst_dir: str | Path, keep: Any, **kwargs: Any) -> dict[str, Any]:
    """Streamed pruning of a safetensors checkpoint; see `rucai.easyep.prune.prune_checkpoint`."""
    from rucai.easyep.prune import prune_checkpoint as _prune

    return _prune(src_dir, dst_dir, keep, **kwargs)


def apply_expert_mask(model: Any, keep: Any, **kwargs: Any) -> Any:
    """Mask mode (full router, pruned experts excluded before top-k); see `rucai.easyep.prune`."""
    from rucai.easyep.prune import apply_expert_mask as _mask

    return _mask(model, keep, **kwargs)


__all__ = ["prune_checkpoint", "apply_expert_mask"]
