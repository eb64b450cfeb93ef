"""Passage corpora: readers for the formats the paper and our data use, and 100-word splitting.

  hotpotqa_contexts  IRCoT-processed HotpotQA (`contexts: [{title, paragraph_text}]`), deduplicated
  kilt               KILT knowledge source JSONL (`wikipedia_title`, `text: [paragraphs]`), split
                     into ~100-word passages (ours: section/bullet paragraphs dropped, title apart;
                     the authors' exact split is `download --corpus kilt` -> r1searcher_tsv)
  jsonl              one passage per line: `{id?, title?, text|contents}`
  tsv                `id \\t text \\t title` (DPR / RocketQA style), header optional
  r1searcher_tsv     the R1-Searcher authors' corpus TSV, `idx \\t passage` read as raw lines (no
                     quoting): the passage is what their server embeds and returns
                     (`rucai.retrieval.download` writes these)
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from rucai.errors import UserError
from rucai.retrieval.base import Passage

SOURCES = ("hotpotqa_contexts", "kilt", "jsonl", "tsv", "r1searcher_tsv")


def split_words(text: str, words: int = 100) -> list[str]:
    toks = text.split()
    return [" ".join(toks[i:i + words]) for i in range(0, len(toks), words)] or []


def _jsonl(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def read_hotpotqa_contexts(path: Path) -> Iterator[Passage]:
    seen: set[tuple[str, str]] = set()
    for row in _jsonl(path):
        for c in row.get("contexts", []):
            key = (c["title"], c["paragraph_text"])
            if key in seen:
                continue
            seen.add(key)
            yield Passage(id=str(len(seen) - 1), title=c["title"], text=" ".join(c["paragraph_text"].split()))


def read_kilt(path: Path, words: int = 100) -> Iterator[Passage]:
    n = 0
    for row in _jsonl(path):
        title = row.get("wikipedia_title", "")
        paras = [p.strip() for p in row.get("text", [])[1:]]  # text[0] repeats the title
        body = " ".join(p for p in paras if p and not p.startswith("Section::::") and not p.startswith("BULLET::::"))
        for chunk in split_words(body, words):
            yield Passage(id=str(n), title=title, text=chunk)
            n += 1


def read_jsonl(path: Path) -> Iterator[Passage]:
    for i, row in enumerate(_jsonl(path)):
        text = row.get("text", row.get("contents"))
        if text is None:
            raise UserError(f"{path}: line {i + 1} has neither 'text' nor 'contents'")
        yield Passage(id=str(row.get("id", i)), title=str(row.get("title", "")), text=str(text))


def read_tsv(path: Path) -> Iterator[Passage]:
    with open(path, encoding="utf-8", newline="") as f:
        for i, row in enumerate(csv.reader(f, delimiter="\t")):
            if i == 0 and row and row[0] == "id":
                continue
            if len(row) < 2:
                continue
            yield Passage(id=row[0], text=row[1], title=row[2] if len(row) > 2 else "")


def read_r1searcher_tsv(path: Path) -> Iterator[Passage]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            idx, sep, text = line.rstrip("\n").partition("\t")
            if sep and text.strip():
                yield Passage(id=idx.lstrip("\ufeff"), title="", text=text)


def read_passages(source: str, path: str | Path, words: int = 100, limit: int | None = None) -> list[Passage]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"corpus file not found: {path}")
    readers = {"hotpotqa_contexts": read_hotpotqa_contexts, "kilt": lambda p: read_kilt(p, words),
               "jsonl": read_jsonl, "tsv": read_tsv, "r1searcher_tsv": read_r1searcher_tsv}
    if source not in readers:
        raise UserError(f"unknown corpus source={source!r}; valid: {', '.join(SOURCES)}")
    out: list[Passage] = []
    for p in readers[source](path):
        out.append(p)
        if limit and len(out) >= limit:
            break
    if not out:
        raise UserError(f"{path} gave no passages for source={source}")
    return out


def write_passages(passages: Iterable[Passage], path: Path) -> None:
    from rucai.utils.io import atomic_writer

    with atomic_writer(path) as f:
        for p in passages:
            f.write(json.dumps({"id": p.id, "title": p.title, "text": p.text}, ensure_ascii=False) + "\n")
