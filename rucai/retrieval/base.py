"""Passages, the retriever interface, the backend registry and the loader (an index folder or a URL).

Backends register themselves: `@register_retriever("bm25")` on an index class (loaded from a folder
with `cls.load(folder, **kwargs)`), `@register_retriever("http", url_schemes=("http://", ...))` on a
client (built with `cls(url, **kwargs)`). `rucai.retrieval` imports its backend modules, so they are
registered before `load_retriever` runs; this module imports none of them.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Callable, Sequence
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

# kind -> index class (`load(folder, **kw)`); URL prefix -> client class (`cls(url, **kw)`)
_INDEXES: dict[str, type[Retriever]] = {}
_URL_CLIENTS: dict[str, type[Retriever]] = {}


def register_retriever(kind: str, url_schemes: Sequence[str] = ()) -> Callable[[type[Retriever]], type[Retriever]]:
    """Class decorator: an index kind stored in a folder (`bm25`, `dense`), or, with `url_schemes`,
    a client for URLs starting with one of them."""

    def deco(cls: type[Retriever]) -> type[Retriever]:
        cls.kind = kind
        if url_schemes:
            for scheme in url_schemes:
                _URL_CLIENTS[scheme] = cls
        else:
            _INDEXES[kind] = cls
        return cls

    return deco


def index_kinds() -> list[str]:
    """The registered index kinds (what `build --kinds` accepts)."""
    return sorted(_INDEXES)


def index_class(kind: str) -> type[Retriever]:
    if kind not in _INDEXES:
        raise UserError(f"unknown index kind {kind!r}; valid: {', '.join(index_kinds())}")
    return _INDEXES[kind]


def load_retriever(spec: str | Path, kind: str | None = None, **kwargs: Any) -> Retriever:
    """A URL (`http://host:port`) -> its registered client; a folder written by
    `python -m rucai.retrieval build` -> an in-process index (`kind` = bm25 | dense picks one when
    the folder holds both)."""
    s = str(spec)
    for scheme, client in _URL_CLIENTS.items():
        if s.startswith(scheme):
            return client(s, **kwargs)
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
    return index_class(kind).load(folder, **kwargs)
