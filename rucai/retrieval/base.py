"""Passages, the retriever interface and the loader (an index folder or an http:// service)."""

from __future__ import annotations

import abc
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rucai.errors import UserError


@dataclass
class Passage:
    id: str
    title: str
    text: str
    score: float = 0.0

    @property
    def contents(self) -> str:
        """What a model reads: `title\\ntext` (title omitted when empty)."""
        return f"{self.title}\n{self.text}" if self.title else self.text

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Retriever(abc.ABC):
    kind: str = "?"

    @abc.abstractmethod
    def search(self, queries: Sequence[str], k: int = 3) -> list[list[Passage]]:
        """Top-k passages for each query (batched), best first."""

    def search_one(self, query: str, k: int = 3) -> list[Passage]:
        return self.search([query], k)[0]

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


def format_documents(passages: Sequence[Passage]) -> str:
    """R1-Searcher's document block body: `(1)doc\\n(2)doc\\n...`, or `None` when nothing came back."""
    if not passages:
        return "None\n"
    return "".join(f"({i + 1}){p.contents}\n" for i, p in enumerate(passages))


INDEX_META = "index.json"


def load_retriever(spec: str | Path, kind: str | None = None, **kwargs: Any) -> Retriever:
    """An `http://host:port` URL -> HTTP client; a folder written by `python -m rucai.retrieval build`
    -> an in-process index (`kind` = bm25 | dense picks one when the folder holds both)."""
    s = str(spec)
    if s.startswith(("http://", "https://")):
        from rucai.retrieval.service import HTTPRetriever

        return HTTPRetriever(s, **kwargs)
    folder = Path(s).expanduser()
    meta_path = folder / INDEX_META
    if not meta_path.is_file():
        raise UserError(f"no retrieval index at {folder}: build one with `python -m rucai.retrieval build "
                        f"--source hotpotqa_contexts --input <jsonl> --out {folder}`")
    meta = json.loads(meta_path.read_text())
    kinds = meta.get("kinds", [])
    kind = kind or (kinds[0] if kinds else "bm25")
    if kind not in kinds:
        raise UserError(f"index {folder} has no {kind!r} index (has: {', '.join(kinds)}); rebuild with --kinds {kind}")
    from rucai.retrieval import index

    cls = {"bm25": index.BM25Index, "dense": index.DenseIndex}[kind]
    return cls.load(folder, **kwargs)
