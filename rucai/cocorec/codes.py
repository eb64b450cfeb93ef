"""CoCoRec / CCFRec item-side inputs: per-view text vectors and semantic code token ids.

Follows the authors' code (`BishopLiu/CCFRec`):

- `encode_emb.py` encodes each text view (title, brand, features, categories, description) on its
  own: the view's text as-is (no "field:" prefix), items in id order, one sentence-transformers
  call per view. Their text cleaning lives in an unreleased preprocessing script; `clean_text`
  does what the issue names (HTML unescape, tags stripped) plus list joining and whitespace
  collapsing. An item without the view is encoded as the empty string, as their `v[attr]` would be.
- `vq/generate_faiss_multi_emb.py`: each view's vectors -> PCA(128, whitened); `pq`: the
  concatenation [N, V*128] quantised by `faiss.IndexPQ(V*128, n_codebooks, 8, METRIC_INNER_PRODUCT)`;
  `rq`: one `IndexResidualQuantizer` per view. Here the RQ gets `codes_per_view` levels per view so
  every view is represented in exactly V*codes_per_view codes (the released script, with its
  shipped n_codebooks=20, made 100 codes of which the model read only the title's 20).
- `data.py`: token id = code + level * 2**bits + 1; 0 is padding (and the [mask] token).
- `main.py`: the model's frozen text vectors are PCA(embedding_size, whitened) of each view's raw
  vector.

PCA is fitted on items 1..N, never on the padding row. `ItemFeatures(...).model_kwargs(data)` returns
the model's item inputs and caches them under `<cache_dir>/cocorec/<sha256>.npz`.
"""

from __future__ import annotations

import hashlib
import html
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

VIEWS = ("title", "brand", "features", "categories", "description")
QUANTIZERS = ("pq", "rq")
_TAG = re.compile(r"</?[A-Za-z][^>]*>")
_WS = re.compile(r"\s+")


def clean_text(v: Any) -> str:
    """One view's value as text: lists (nested ok) joined by spaces, dicts as "key: value", HTML
    entities unescaped, tags replaced by a space, whitespace collapsed; None -> ""."""
    if v is None:
        return ""
    if isinstance(v, (list, tuple)):
        return _WS.sub(" ", " ".join(clean_text(x) for x in v)).strip()
    if isinstance(v, Mapping):
        return _WS.sub(" ", " ".join(f"{k}: {clean_text(x)}" for k, x in v.items())).strip()
    t = html.unescape(str(v))
    t = _TAG.sub(" ", t)
    return _WS.sub(" ", t).strip()


def view_texts(item_text: Mapping[int, Mapping[str, Any]], view: str, num_items: int) -> list[str]:
    """Cleaned text of `view` for items 1..num_items ("" where an item lacks it)."""
    norm = {int(k): v for k, v in item_text.items()}
    return [clean_text((norm.get(i) or {}).get(view)) for i in range(1, num_items + 1)]


def _check_views(views: Sequence[str], texts: Sequence[Sequence[str]], item_text: Mapping) -> None:
    if not views:
        raise UserError(f"item_features.views is empty; pass some of {list(VIEWS)}")
    for v, t in zip(views, texts, strict=True):
        if not any(t):
            have = sorted({k for m in item_text.values() for k, x in (m or {}).items() if x not in (None, "", [])})
            raise UserError(
                f"view {v!r} is empty for every item (the data's item fields: {', '.join(have) or 'none'}); "
                f"drop it from item_features.views"
            )


def _view_key(encoder: str, view: str, texts: Sequence[str]) -> str:
    from rucai.rec.embeddings import cache_key

    return cache_key(encoder, (f"view={view}",), texts)


def encode_views(
    item_text: Mapping[int, Mapping[str, Any]],
    views: Sequence[str],
    encoder: str,
    num_items: int,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 64,
    device: str | None = None,
) -> np.ndarray:
    """Each view encoded separately (cached per view) -> float32 [V, N+1, D], row 0 = zeros."""
    from rucai.rec.embeddings import encode_texts

    views = list(views)
    texts = [view_texts(item_text, v, num_items) for v in views]
    _check_views(views, texts, item_text)
    out = [encode_texts(t, encoder, cache_dir, batch_size, device, fields=(f"view={v}",))
           for v, t in zip(views, texts, strict=True)]
    return np.stack(out).astype(np.float32, copy=False)


def unpack_codes(packed: np.ndarray, m: int, bits: int) -> np.ndarray:
    """faiss packed codes [n, code_size] uint8 -> [n, m] int64 (faiss `BitstringWriter` order: the
    first code in the lowest bits of the first byte)."""
    packed = np.ascontiguousarray(packed, dtype=np.uint8)
    if bits == 8:
        return packed[:, :m].astype(np.int64)
    b = np.unpackbits(packed, axis=1, bitorder="little")[:, : m * bits].reshape(len(packed), m, bits)
    return (b.astype(np.int64) << np.arange(bits, dtype=np.int64)).sum(-1)


def _check_trainable(n: int, bits: int, what: str) -> None:
    k = 2**bits
    if n < k:
        raise UserError(
            f"{what}: {n} items cannot train {k} centroids (2**bits, bits={bits}); lower "
            f"item_features.bits to at most {max(int(np.log2(max(n, 1))), 1)}"
        )
    if n < 39 * k:
        log.warning("%s: %d items for %d centroids per codebook (faiss wants >= %d); codes may be "
                    "less balanced", what, n, k, 39 * k)


def train_pq(x: np.ndarray, m: int, bits: int, seed: int = 0):
    """`faiss.IndexPQ(d, m, bits, METRIC_INNER_PRODUCT)` trained on x [n, d] with k-means seed `seed`."""
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.shape[1] % m:
        raise UserError(f"pq: dimension {x.shape[1]} is not divisible by {m} codes; pick code_pca_dim "
                        f"divisible by codes_per_view")
    _check_trainable(len(x), bits, "pq")
    index = faiss.IndexPQ(x.shape[1], m, bits, faiss.METRIC_INNER_PRODUCT)
    index.pq.cp.seed = int(seed)
    index.pq.cp.min_points_per_centroid = 1  # faiss's stderr warning; _check_trainable logs it once
    index.train(x)
    return index


def train_rq(x: np.ndarray, m: int, bits: int, seed: int = 0):
    """`faiss.IndexResidualQuantizer(d, m, bits, METRIC_INNER_PRODUCT)` trained on x with seed `seed`."""
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    _check_trainable(len(x), bits, "rq")
    index = faiss.IndexResidualQuantizer(x.shape[1], m, bits, faiss.METRIC_INNER_PRODUCT)
    index.rq.cp.seed = int(seed)
    index.rq.cp.min_points_per_centroid = 1  # faiss's stderr warning; _check_trainable logs it once
    index.train(x)
    return index


def to_tokens(codes: np.ndarray, bits: int) -> np.ndarray:
    """Codes [N, C] -> token ids [N+1, C]: code + level * 2**bits + 1 (level = column), row 0 = 0."""
    codes = np.asarray(codes, dtype=np.int64)
    tok = codes + np.arange(codes.shape[1], dtype=np.int64) * (2**bits) + 1
    return np.concatenate([np.zeros((1, codes.shape[1]), dtype=np.int64), tok])


def quantize(
    x_views: np.ndarray | Sequence[np.ndarray],
    method: str = "pq",
    codes_per_view: int = 4,
    bits: int = 8,
    seed: int = 0,
    threads: int = 1,
) -> np.ndarray:
    """Per-view item vectors [V, N, d] (rows = items 1..N, no padding row) -> token ids
    int64 [N+1, V*codes_per_view]; row 0 = 0, ids of column c lie in c*2**bits+1 .. (c+1)*2**bits.

    pq: one IndexPQ over the views' concatenation [N, V*d] with V*codes_per_view sub-quantisers (so
    codes_per_view of them per view). rq: one residual quantiser with codes_per_view levels per view,
    view j in columns j*codes_per_view .. (j+1)*codes_per_view-1.

    The same input, seed and `threads` give identical codes run to run; a different faiss thread
    count can change some codes (k-means sums in another order: 266 of Office's 2,420 items
    differed between 1 and 2 threads), so `threads` is part of ItemFeatures' cache key."""
    import faiss

    if method not in QUANTIZERS:
        raise UserError(f"item_features.quantizer={method!r}; use one of {list(QUANTIZERS)}")
    if not 1 <= bits <= 16:
        raise UserError(f"item_features.bits={bits}; use 1..16")
    xs = [np.ascontiguousarray(v, dtype=np.float32) for v in x_views]
    old = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(int(threads))
    try:
        if method == "pq":
            x = np.ascontiguousarray(np.concatenate(xs, axis=1))
            m = len(xs) * codes_per_view
            index = train_pq(x, m, bits, seed)
            codes = unpack_codes(index.pq.compute_codes(x), m, bits)
        else:
            parts = []
            for v in xs:
                index = train_rq(v, codes_per_view, bits, seed)
                parts.append(unpack_codes(index.rq.compute_codes(v), codes_per_view, bits))
            codes = np.concatenate(parts, axis=1)
    finally:
        faiss.omp_set_num_threads(old)
    return to_tokens(codes, bits)


def code_stats(tokens: np.ndarray) -> dict[str, Any]:
    """Usage of token ids [N+1, C] (row 0 ignored): distinct codes per level, items sharing a tuple."""
    t = np.asarray(tokens)[1:]
    per_level = [int(len(np.unique(t[:, c]))) for c in range(t.shape[1])]
    _, inv, counts = np.unique(t, axis=0, return_inverse=True, return_counts=True)
    shared = counts[np.asarray(inv).reshape(-1)] > 1
    return {
        "items": int(len(t)),
        "codes": int(t.shape[1]),
        "distinct_per_level": per_level,
        "distinct_per_level_mean": float(np.mean(per_level)) if per_level else 0.0,
        "distinct_tuples": int(len(counts)),
        "items_sharing_tuple": int(shared.sum()),
        "max_items_per_tuple": int(counts.max()) if len(counts) else 0,
    }


class ItemFeatures:
    """Hydra-instantiated item inputs of the CoCoRec model (conf/item_features/cocorec.yaml)."""

    def __init__(
        self,
        views: Sequence[str] = VIEWS,
        encoder: str = "all-minilm-l6-v2",
        code_pca_dim: int = 128,
        text_dim: int = 128,
        quantizer: str = "pq",
        codes_per_view: int = 4,
        bits: int = 8,
        seed: int = 0,
        cache_dir: str | None = None,
        faiss_threads: int = 1,
        batch_size: int = 64,
        device: str | None = None,
    ):
        if quantizer not in QUANTIZERS:
            raise UserError(f"item_features.quantizer={quantizer!r}; use one of {list(QUANTIZERS)}")
        if quantizer == "pq" and code_pca_dim % codes_per_view:
            raise UserError(f"item_features.code_pca_dim={code_pca_dim} must be divisible by "
                            f"codes_per_view={codes_per_view} for pq")
        self.views = list(views)
        self.encoder = encoder
        self.code_pca_dim = int(code_pca_dim)
        self.text_dim = int(text_dim)
        self.quantizer = quantizer
        self.codes_per_view = int(codes_per_view)
        self.bits = int(bits)
        self.seed = int(seed)
        self.cache_dir = cache_dir
        self.faiss_threads = int(faiss_threads)
        self.batch_size = int(batch_size)
        self.device = device

    @property
    def num_codes(self) -> int:
        return len(self.views) * self.codes_per_view

    def _cache_path(self, emb_keys: list[str]) -> Path:
        import faiss

        from rucai.rec.embeddings import default_cache_dir

        spec = {
            "embeddings": emb_keys, "views": self.views, "encoder": self.encoder,
            "code_pca_dim": self.code_pca_dim, "text_dim": self.text_dim, "quantizer": self.quantizer,
            "codes_per_view": self.codes_per_view, "bits": self.bits, "seed": self.seed,
            "faiss": faiss.__version__, "faiss_threads": self.faiss_threads, "version": 1,
        }
        key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
        root = Path(self.cache_dir) if self.cache_dir is not None else default_cache_dir()
        return root / "cocorec" / f"{key}.npz"

    def compute(self, item_text: Mapping[int, Mapping[str, Any]], num_items: int) -> tuple[np.ndarray, np.ndarray]:
        """-> (token ids int64 [N+1, C], text vectors float32 [V, N+1, text_dim]); cached."""
        from rucai.rec.embeddings import pca_whiten
        from rucai.utils.io import atomic_writer

        texts = [view_texts(item_text, v, num_items) for v in self.views]
        _check_views(self.views, texts, item_text)
        path = self._cache_path([_view_key(self.encoder, v, t) for v, t in zip(self.views, texts, strict=True)])
        if path.is_file():
            with np.load(path) as z:
                codes, text_vectors = z["item_codes"], z["text_vectors"]
            if codes.shape == (num_items + 1, self.num_codes):
                log.info("cocorec item features: cache hit %s", path)
                return codes, text_vectors
        emb = encode_views(item_text, self.views, self.encoder, num_items, self.cache_dir,
                           self.batch_size, self.device)
        code_in = [pca_whiten(e[1:], self.code_pca_dim) for e in emb]
        codes = quantize(code_in, self.quantizer, self.codes_per_view, self.bits, self.seed, self.faiss_threads)
        text_vectors = np.zeros((len(self.views), num_items + 1, self.text_dim), dtype=np.float32)
        for j, e in enumerate(emb):
            z = pca_whiten(e[1:], self.text_dim)
            text_vectors[j, 1:, : z.shape[1]] = z
        s = code_stats(codes)
        log.info("cocorec %s codes: %d items x %d codes, %.1f distinct codes per level (of %d), "
                 "%d items share a full code tuple", self.quantizer, s["items"], s["codes"],
                 s["distinct_per_level_mean"], 2**self.bits, s["items_sharing_tuple"])
        with atomic_writer(path, "wb") as f:
            np.savez(f, item_codes=codes, text_vectors=text_vectors)
        return codes, text_vectors

    def model_kwargs(self, data) -> dict[str, Any]:
        """Item inputs of the model for a `SequenceData`: item_codes LongTensor [N+1, C] (token ids,
        row 0 = 0), text_vectors FloatTensor [V, N+1, text_dim] (row 0 = 0), code_vocab, num_codes."""
        import torch

        codes, text_vectors = self.compute(data.item_text, data.num_items)
        return {
            "item_codes": torch.from_numpy(np.ascontiguousarray(codes, dtype=np.int64)),
            "text_vectors": torch.from_numpy(np.ascontiguousarray(text_vectors, dtype=np.float32)),
            "code_vocab": self.num_codes * 2**self.bits + 1,
            "num_codes": self.num_codes,
        }
