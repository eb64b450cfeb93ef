"""Passage retrieval shared by retrieval-augmented methods (R1-Searcher, ...).

  corpus   passages from Wikipedia-style JSONL (KILT), IRCoT/HotpotQA contexts or a TSV, split
           into ~100-word passages
  index    BM25 (bm25s) and dense (sentence-transformers + faiss) indexes, saved in one folder
  service  a small HTTP server (127.0.0.1 by default, batched queries) and its client

Build: `python -m rucai.retrieval build --source hotpotqa_contexts --input <jsonl> --out <dir>`;
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
