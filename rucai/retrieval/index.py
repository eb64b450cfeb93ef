"""BM25 (bm25s) and dense (faiss inner product on unit vectors; all-MiniLM-L6-v2 by default, the authors'
BGE-large-en-v1.5 with `encoder=bge-large-en-v1.5`, `rucai.retrieval.encoders`) indexes.

An index folder holds `passages.jsonl`, `index.json` (what was built, from what) and one
sub-folder per kind: `bm25/` (bm25s' own files) and `dense/` (`faiss.index`, `encoder.json`: the encoder's full spec).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rucai.errors import UserError
from rucai.retrieval.base import INDEX_META, Passage, Retriever, index_class, index_kinds, register_retriever
from rucai.retrieval.corpus import write_passages
from rucai.retrieval.encoders import EncoderSpec, load_text_encoder, resolve_spec

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
    """Exact inner-product search (faiss IndexFlatIP, the authors' 'Flat' METRIC_INNER_PRODUCT) over
    normalised passage vectors; queries encoded with the same encoder and its query instruction
    (`rucai.retrieval.encoders`)."""

    def __init__(self, passages: list[Passage], index: Any, encoder: Any, spec: EncoderSpec) -> None:
        self.passages, self.index, self.encoder, self.spec = passages, index, encoder, spec
        self.encoder_name = spec.name

    def _encode(self, texts: Sequence[str]) -> Any:  # queries (kept for callers of the old name)
        return self.encoder.encode_queries(list(texts))

    @classmethod
    def build(cls, passages: list[Passage], encoder: str | EncoderSpec = DEFAULT_ENCODER, batch_size: int = 64,
              chunk: int = 65536, text_encoder: Any = None) -> DenseIndex:
        """Encode passages `chunk` at a time into the index (bounded memory besides the index itself);
        `text_encoder`: an already built encoder for `encoder`'s spec (tests build a tiny one)."""
        import faiss

        spec = resolve_spec(encoder)
        enc = text_encoder if text_encoder is not None else load_text_encoder(spec, batch_size)
        index = None
        for b in range(0, len(passages), chunk):
            emb = enc.encode_passages([p.contents for p in passages[b:b + chunk]])
            if index is None:
                index = faiss.IndexFlatIP(emb.shape[1])
            index.add(emb)
            log.info("dense index: %d / %d passages encoded (%s)", min(b + chunk, len(passages)), len(passages),
                     spec.name)
        return cls(passages, index, enc, spec)

    def save(self, folder: Path) -> None:
        import faiss

        d = folder / "dense"
        d.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self.index, str(d / "faiss.index"))
        (d / "encoder.json").write_text(json.dumps({"encoder": self.spec.name, "spec": asdict(self.spec)}) + "\n")

    @classmethod
    def load(cls, folder: Path, passages: list[Passage] | None = None, batch_size: int = 64,
             text_encoder: Any = None) -> DenseIndex:
        import faiss

        d = Path(folder) / "dense"
        meta = json.loads((d / "encoder.json").read_text())
        spec = resolve_spec(meta["spec"]) if "spec" in meta else resolve_spec(meta["encoder"])
        enc = text_encoder if text_encoder is not None else load_text_encoder(spec, batch_size)
        return cls(passages or read_passages_file(Path(folder)), faiss.read_index(str(d / "faiss.index")), enc, spec)

    def search(self, queries: Sequence[str], k: int = 3) -> list[list[Passage]]:
        if not queries:
            return []
        scores, ids = self.index.search(self.encoder.encode_queries(list(queries)), min(int(k), len(self.passages)))
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
        same_encoder = "dense" not in kinds or m.get("encoder") == encoder
        if m.get("source") == want and set(kinds) <= set(m.get("kinds", [])) and same_encoder:
            return out
    return build_index(read_passages(source, input_path, words=words, limit=limit), out, kinds, encoder, want)
