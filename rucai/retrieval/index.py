"""BM25 (bm25s) and dense (sentence-transformers + faiss, inner product on unit vectors) indexes.

An index folder holds `passages.jsonl`, `index.json` (what was built, from what) and one
sub-folder per kind: `bm25/` (bm25s' own files) and `dense/` (`faiss.index`, encoder name).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rucai.errors import UserError
from rucai.retrieval.base import INDEX_META, Passage, Retriever, index_class, index_kinds, register_retriever
from rucai.retrieval.corpus import write_passages

log = logging.getLogger(__name__)

DEFAULT_ENCODER = "all-minilm-l6-v2"


def read_passages_file(folder: Path) -> list[Passage]:
    out = []
    with open(folder / "passages.jsonl", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            out.append(Passage(id=r["id"], title=r["title"], text=r["text"]))
    return out


def _tokenize(texts: Sequence[str]) -> list[list[str]]:
    import bm25s

    return bm25s.tokenize(list(texts), stopwords="en", return_ids=False, show_progress=False)


@register_retriever("bm25")
class BM25Index(Retriever):

    def __init__(self, passages: list[Passage], model: Any, n_threads: int = 1) -> None:
        self.passages = passages
        self.model = model
        self.n_threads = int(n_threads)

    @classmethod
    def build(cls, passages: list[Passage], k1: float = 1.5, b: float = 0.75) -> BM25Index:
        import bm25s

        model = bm25s.BM25(k1=k1, b=b)
        model.index(_tokenize([p.contents for p in passages]), show_progress=False)
        return cls(passages, model)

    def save(self, folder: Path) -> None:
        self.model.save(str(folder / "bm25"))

    @classmethod
    def load(cls, folder: Path, passages: list[Passage] | None = None, n_threads: int = 1) -> BM25Index:
        import bm25s

        return cls(passages or read_passages_file(Path(folder)), bm25s.BM25.load(str(Path(folder) / "bm25")),
                   n_threads=n_threads)

    def search(self, queries: Sequence[str], k: int = 3) -> list[list[Passage]]:
        if not queries:
            return []
        k = min(int(k), len(self.passages))
        toks = _tokenize(queries)
        # bm25s cannot score an empty token list: give such queries a token that matches nothing
        toks = [t if t else ["\x00"] for t in toks]
        docs, scores = self.model.retrieve(toks, k=k, show_progress=False, n_threads=self.n_threads)
        out = []
        for row_d, row_s in zip(docs.tolist(), scores.tolist(), strict=True):
            hits = [Passage(**(vars(self.passages[d]) | {"score": float(s)})) for d, s in zip(row_d, row_s, strict=True)
                    if s > 0]
            out.append(hits)
        return out


@register_retriever("dense")
class DenseIndex(Retriever):

    def __init__(self, passages: list[Passage], index: Any, encoder: Any, encoder_name: str,
                 batch_size: int = 64) -> None:
        self.passages, self.index, self.encoder = passages, index, encoder
        self.encoder_name, self.batch_size = encoder_name, int(batch_size)

    @staticmethod
    def _encoder(name: str) -> Any:
        from rucai.rec.embeddings import load_encoder

        return load_encoder(name)

    def _encode(self, texts: Sequence[str]) -> Any:
        import numpy as np

        emb = self.encoder.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                  convert_to_numpy=True, show_progress_bar=False)
        return np.ascontiguousarray(emb, dtype="float32")

    @classmethod
    def build(cls, passages: list[Passage], encoder: str = DEFAULT_ENCODER, batch_size: int = 64) -> DenseIndex:
        import faiss

        enc = cls._encoder(encoder)
        self = cls(passages, None, enc, encoder, batch_size)
        emb = self._encode([p.contents for p in passages])
        self.index = faiss.IndexFlatIP(emb.shape[1])
        self.index.add(emb)
        return self

    def save(self, folder: Path) -> None:
        import faiss

        d = folder / "dense"
        d.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(d / "faiss.index"))
        (d / "encoder.json").write_text(json.dumps({"encoder": self.encoder_name}) + "\n")

    @classmethod
    def load(cls, folder: Path, passages: list[Passage] | None = None, batch_size: int = 64) -> DenseIndex:
        import faiss

        d = Path(folder) / "dense"
        name = json.loads((d / "encoder.json").read_text())["encoder"]
        return cls(passages or read_passages_file(Path(folder)), faiss.read_index(str(d / "faiss.index")),
                   cls._encoder(name), name, batch_size)

    def search(self, queries: Sequence[str], k: int = 3) -> list[list[Passage]]:
        if not queries:
            return []
        scores, ids = self.index.search(self._encode(queries), min(int(k), len(self.passages)))
        return [[Passage(**(vars(self.passages[i]) | {"score": float(s)})) for i, s in zip(r_i, r_s, strict=True)
                 if i >= 0] for r_i, r_s in zip(ids.tolist(), scores.tolist(), strict=True)]


def build_index(passages: list[Passage], out: str | Path, kinds: Sequence[str] = ("bm25",),
                encoder: str = DEFAULT_ENCODER, source: dict | None = None) -> Path:
    """Write `passages.jsonl`, each requested index and `index.json` (last, so a folder with
    `index.json` is always complete)."""
    from rucai.utils.io import atomic_write_json

    out = Path(out).expanduser()
    bad = sorted(set(kinds) - set(index_kinds()))
    if bad:
        raise UserError(f"unknown index kind(s) {', '.join(bad)}; valid: {', '.join(index_kinds())}")
    out.mkdir(parents=True, exist_ok=True)
    (out / INDEX_META).unlink(missing_ok=True)
    write_passages(passages, out / "passages.jsonl")
    for kind in kinds:
        log.info("building %s index over %d passages", kind, len(passages))
        options = {"dense": {"encoder": encoder}}.get(kind, {})
        idx = index_class(kind).build(passages, **options)
        idx.save(out)
    atomic_write_json(out / INDEX_META, {"kinds": list(kinds), "num_passages": len(passages),
                                         "encoder": encoder if "dense" in kinds else None,
                                         "source": source or {}})
    return out


def ensure_index(out: str | Path, source: str, input_path: str | Path, kinds: Sequence[str] = ("bm25",),
                 words: int = 100, limit: int | None = None, encoder: str = DEFAULT_ENCODER) -> Path:
    """Build the index once; reuse it when `index.json` already describes the same build."""
    from rucai.retrieval.corpus import read_passages

    out = Path(out).expanduser()
    want = {"source": source, "input": str(Path(input_path).resolve()), "words": words, "limit": limit}
    meta = out / INDEX_META
    if meta.is_file():
        m = json.loads(meta.read_text())
        if m.get("source") == want and set(kinds) <= set(m.get("kinds", [])):
            return out
    return build_index(read_passages(source, input_path, words=words, limit=limit), out, kinds, encoder, want)
