"""Semantic IDs for a dataset: item text -> embeddings -> RQ-VAE codes, cached on disk.

`semantic_ids(data, encoder=..., fields=..., rqvae={...}, cache_dir=...)` returns
`{item_id: [c1, ..., cL, suffix]}`. The embeddings are cached by encoder and text
(`rucai.rec.embeddings`), the trained RQ-VAE and its codes by (embeddings, RQ-VAE config), so a
sweep over recommender settings tokenizes once. `RQVAETokenizer` is the item tokenizer component
(`item_tokenizer=rqvae`, see `rucai.rec.tokenization`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def semantic_ids(
    data: Any,
    encoder: str = "all-minilm-l6-v2",
    fields: list[str] | tuple[str, ...] = ("title", "brand", "description"),
    rqvae: dict[str, Any] | None = None,
    cache_dir: str | None = None,
) -> dict[int, list[int]]:
    import numpy as np

    from rucai.rec.embeddings import default_cache_dir, encode_items
    from rucai.rec.rqvae import RQVAEConfig, train_rqvae

    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    emb = encode_items(data.item_text, encoder=encoder, fields=tuple(fields), cache_dir=cache,
                       num_items=data.num_items)
    cfg = RQVAEConfig.from_dict(rqvae or {})
    key = hashlib.sha256(np.ascontiguousarray(emb).tobytes() + json.dumps(
        cfg.__dict__, sort_keys=True, default=str).encode()).hexdigest()[:16]
    out = cache / "semantic_ids" / f"{data.name}-{key}"
    ids_file = out / "semantic_ids.json"
    if not ids_file.is_file():
        log.info("training RQ-VAE for %s (%d items) -> %s", data.name, data.num_items, out)
        _, stats = train_rqvae(emb, out_dir=out, cfg=cfg)
        log.info("RQ-VAE: collision rate %.3f before resolution", stats.get("collision_rate", float("nan")))
    else:
        log.info("semantic IDs from cache %s", ids_file)
    return {int(k): list(v) for k, v in json.loads(ids_file.read_text()).items()}


class RQVAETokenizer:
    """Item tokenizer: RQ-VAE semantic IDs of the items' text embeddings (cached)."""

    def __init__(self, encoder: str = "all-minilm-l6-v2", fields: list[str] | tuple[str, ...] = ("title", "brand", "description"),
                 rqvae: dict[str, Any] | None = None, cache_dir: str | None = None) -> None:
        self.kw = dict(encoder=encoder, fields=tuple(fields), rqvae=dict(rqvae or {}), cache_dir=cache_dir)

    def __call__(self, data: Any) -> dict[int, list[int]]:
        return semantic_ids(data, **self.kw)
