"""Passage retrieval shared by retrieval-augmented methods (R1-Searcher, ...).

  corpus   passages from Wikipedia-style JSONL (KILT), IRCoT/HotpotQA contexts or a TSV, split
           into ~100-word passages
  index    BM25 (bm25s) and dense (faiss) indexes, saved in one folder
  encoders the dense encoders: all-MiniLM-L6-v2 (default) or the R1-Searcher authors' BGE-large-en-v1.5
           (CLS pooling, normalised, query instruction)
  download the R1-Searcher authors' corpora (KILT, HotpotQA abstracts) -> their TSV
  service  a small HTTP server (127.0.0.1 by default, batched queries) and its client

Download: `python -m rucai.retrieval download --corpus kilt|hotpotqa_abstracts --out <dir>`;
build: `python -m rucai.retrieval build --source hotpotqa_contexts --input <jsonl> --out <dir>`;
serve: `python -m rucai.retrieval serve --index <dir>`; in process: `load_retriever(<dir>)`.
Every retriever has `search(queries: list[str], k) -> list[list[Passage]]`.
Backends register themselves (`rucai.retrieval.base.register_retriever`); importing this package
imports the backend modules so `load_retriever` finds them. Heavy imports (bm25s, faiss, torch)
stay inside functions.
"""

from __future__ import annotations

from rucai.retrieval import index, service  # noqa: F401 - backends register on import
from rucai.retrieval.base import Passage, Retriever, format_documents, load_retriever, register_retriever

__all__ = ["Passage", "Retriever", "format_documents", "load_retriever", "register_retriever"]
