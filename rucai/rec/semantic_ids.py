"""Semantic IDs for a dataset: item text -> embeddings -> RQ-VAE codes, cached on disk.

`semantic_ids(data, encoder=..., fields=..., rqvae={...}, cache_dir=..., pca_dim=..., fit_on=...)`
returns `{item_id: [c1, ..., cL, suffix]}`. The embeddings are cached by encoder and text
(`rucai.rec.embeddings`), the trained RQ-VAE and its codes by (embeddings, RQ-VAE config, pca_dim,
fit_on, the fitted items), so a sweep over recommender settings tokenizes once. `RQVAETokenizer` is
the item tokenizer component (`item_tokenizer=rqvae`, see `rucai.rec.tokenization`).

With `pca_dim=128, fit_on=train` and the MTGRec authors' RQ-VAE options
(`conf/item_tokenizer/rqvae_authors.yaml`) this is exactly MTGRec's tokenizer stage
(`rucai.mtgrec.tokenizers.build_tokenizers`): PCA whitening fit on all items, the RQ-VAE fit on the
training items, codes for all items; same seed and epochs give the codes of its last tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FIT_ON = ("all", "train")
# options added after caches existed: left out of the cache key while at these values, so old
# caches (and their keys) stay valid
_KEY_DEFAULTS = {"optimizer": "adamw", "lr_schedule": "constant", "kmeans_init_on": "first_batch",
                 "init": "xavier_normal", "device": "cpu", "pca_dim": None, "fit_on": "all"}



def cache_key(emb: Any, cfg: Any, pca_dim: int | None = None, fit_on: str = "all",
              fit_items: Sequence[int] | None = None) -> str:
    import numpy as np

    opts = {**cfg.__dict__, "pca_dim": pca_dim, "fit_on": fit_on}
    opts = {k: v for k, v in opts.items() if not (k in _KEY_DEFAULTS and v == _KEY_DEFAULTS[k])}
    h = hashlib.sha256(np.ascontiguousarray(emb).tobytes() + json.dumps(opts, sort_keys=True, default=str).encode())
    if fit_items is not None:
        h.update(np.asarray(list(fit_items), dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def semantic_ids(
    data: Any,
    encoder: str = "all-minilm-l6-v2",
    fields: list[str] | tuple[str, ...] = ("title", "brand", "description"),
    rqvae: dict[str, Any] | None = None,
    cache_dir: str | None = None,
    pca_dim: int | None = None,
    fit_on: str = "all",
) -> dict[int, list[int]]:
    """pca_dim: whiten the embeddings to this many PCA axes first (fit on all items; None = raw).
    fit_on: all | train (the RQ-VAE is fit on `train_items(data.sequences)`; codes for all items)."""
    from rucai.errors import UserError
    from rucai.rec.embeddings import default_cache_dir, encode_items, pca_whiten
    from rucai.rec.rqvae import RQVAEConfig, train_rqvae

    if fit_on not in FIT_ON:
        raise UserError(f"item_tokenizer.fit_on={fit_on!r}; use all or train (items of the training split)")
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    emb = encode_items(data.item_text, encoder=encoder, fields=tuple(fields), cache_dir=cache,
                       num_items=data.num_items)
    cfg = RQVAEConfig.from_dict(rqvae or {})
    from rucai.data.sequential import train_items

    fit = train_items(data.sequences) if fit_on == "train" else None
    key = cache_key(emb, cfg, pca_dim, fit_on, fit)
    out = cache / "semantic_ids" / f"{data.name}-{key}"
    ids_file = out / "semantic_ids.json"
    if not ids_file.is_file():
        log.info("training RQ-VAE for %s (%d items, fit on %s) -> %s", data.name, data.num_items, fit_on, out)
        x, padding = emb, True
        if pca_dim:
            x, padding = pca_whiten(emb[1:], int(pca_dim)), False
        rows = None if fit is None else [i - 1 for i in fit]
        _, stats = train_rqvae(x, out_dir=out, cfg=cfg, padding_row=padding, fit_rows=rows)
        log.info("RQ-VAE: collision rate %.3f before resolution", stats.get("collision_rate", float("nan")))
    else:
        log.info("semantic IDs from cache %s", ids_file)
    return {int(k): list(v) for k, v in json.loads(ids_file.read_text()).items()}


class RQVAETokenizer:
    """Item tokenizer: RQ-VAE semantic IDs of the items' text embeddings (cached)."""

    def __init__(self, encoder: str = "all-minilm-l6-v2", fields: list[str] | tuple[str, ...] = ("title", "brand", "description"),
                 rqvae: dict[str, Any] | None = None, cache_dir: str | None = None,
                 pca_dim: int | None = None, fit_on: str = "all") -> None:
        self.kw = dict(encoder=encoder, fields=tuple(fields), rqvae=dict(rqvae or {}), cache_dir=cache_dir,
                       pca_dim=pca_dim, fit_on=fit_on)

    def __call__(self, data: Any) -> dict[int, list[int]]:
        return semantic_ids(data, **self.kw)
