"""The R1-Searcher authors' retrieval corpora: download from their sources and write them as the authors'
TSV (`idx \\t passage`, the string their server embeds and returns), ready for
`python -m rucai.retrieval build --source r1searcher_tsv --kinds dense --encoder bge-large-en-v1.5`.

  kilt                KILT knowledge source (Wikipedia 2019-08; their README:
                      http://dl.fbaipublicfiles.com/KILT/kilt_knowledgesource.json, ~35 GB) split as their
                      `wiki_corpus_index_bulid/split_kilt_to_100.py`: a page's `text` paragraphs joined
                      with "" (title line included), `BULLET::::` and `Section::::` removed, 100-word
                      chunks, passage `<title>   <chunk>` (three spaces). Their pages come from a
                      `filtered_kilt_knowledgesource.jsonl` whose filter is not released: we keep every page
                      (their sample pages are raw KILT lines). Used for 2Wiki, Musique and Bamboogle.
  hotpotqa_abstracts  HotpotQA's processed Wikipedia abstracts (2017-10-01 dump;
                      https://nlp.stanford.edu/projects/hotpotqa/enwiki-20171001-pages-meta-current-withlinks-abstracts.tar.bz2,
                      the `enwiki-20171001-pages-meta-current-withlinks-abstracts.tsv` of their
                      `train/wiki_corpus_load.py hotpotqa`): one passage per article with a non-empty
                      abstract, `Title: <title> Text: <sentences joined by " ">` (their sample
                      `train_np_title_abs_sample_100.tsv`; its whitespace details and order are not
                      recoverable from the release). Used for training and HotpotQA evaluation.

`python -m rucai.retrieval download --corpus kilt --out DIR` fetches into DIR (an existing raw file is
reused, so a file fetched elsewhere and put there works offline) and writes `DIR/<corpus>.tsv`. Offline,
it stops with one line naming the URL and the fix.
"""

from __future__ import annotations

import bz2
import io
import json
import logging
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rucai.errors import UserError

log = logging.getLogger(__name__)


def kilt_passages(lines: Iterator[str], words: int = 100) -> Iterator[tuple[str, str]]:
    """(title, passage) per 100-word chunk, exactly as `split_kilt_to_100.py`."""
    for line in lines:
        if not line.strip():
            continue
        data = json.loads(line)
        title = data["wikipedia_title"]
        full_text = "".join(data.get("text", [])).replace("BULLET::::", "").replace("Section::::", "")
        toks = full_text.split()
        for i in range(0, len(toks), words):
            yield title, f"{title}   {' '.join(toks[i:i + words])}"


def hotpotqa_abstract_passages(tar_path: Path) -> Iterator[tuple[str, str]]:
    """(title, passage) per article of the HotpotQA abstracts archive (bz2 JSON-lines members, in
    archive order; `text` is the abstract's list of sentences)."""
    with tarfile.open(tar_path, "r|bz2") as tar:
        for member in tar:
            if not member.isfile() or not member.name.endswith(".bz2"):
                continue
            raw = tar.extractfile(member)
            if raw is None:
                continue
            for line in io.TextIOWrapper(bz2.open(io.BytesIO(raw.read())), encoding="utf-8"):
                if not line.strip():
                    continue
                row = json.loads(line)
                text = " ".join(s for s in row.get("text", []) if s.strip())
                if text.strip():
                    yield row["title"], f"Title: {row['title']} Text: {text}"


def write_tsv(passages: Iterator[tuple[str, str]], dst: Path) -> int:
    """`idx \\t passage` lines (no quoting; tabs and newlines inside a passage become spaces)."""
    from rucai.utils.io import atomic_writer

    n = 0
    with atomic_writer(dst) as f:
        for _, text in passages:
            if "\t" in text or "\n" in text:
                text = " ".join(text.split())
            f.write(f"{n}\t{text}\n")
            n += 1
    return n


@dataclass(frozen=True)
class Corpus:
    url: str
    raw: str  # the downloaded file's name
    convert: Callable[[Path], Iterator[tuple[str, str]]]


def _kilt(path: Path) -> Iterator[tuple[str, str]]:
    with open(path, encoding="utf-8") as f:
        yield from kilt_passages(f)


CORPORA: dict[str, Corpus] = {
    "kilt": Corpus("http://dl.fbaipublicfiles.com/KILT/kilt_knowledgesource.json", "kilt_knowledgesource.json", _kilt),
    "hotpotqa_abstracts": Corpus(
        "https://nlp.stanford.edu/projects/hotpotqa/enwiki-20171001-pages-meta-current-withlinks-abstracts.tar.bz2",
        "enwiki-20171001-pages-meta-current-withlinks-abstracts.tar.bz2", hotpotqa_abstract_passages),
}


def download_corpus(corpus: str, out: str | Path, url: str | None = None, quiet: bool = False) -> Path:
    """Fetch `corpus` into `out` (reusing a raw file already there) and write `out/<corpus>.tsv`."""
    from rucai.data.download import FIX, DownloadError, fetch

    if corpus not in CORPORA:
        raise UserError(f"unknown corpus {corpus!r}; valid: {', '.join(CORPORA)}")
    c = CORPORA[corpus]
    out = Path(out).expanduser()
    raw = out / c.raw
    src = url or c.url
    try:
        fetch(src, raw, quiet=quiet)
    except DownloadError as e:
        fix = f"fetch {src} on a machine with internet into {raw} and rerun (an existing file is reused)"
        raise UserError(str(e).replace(FIX, fix)) from None
    dst = out / f"{corpus}.tsv"
    log.info("writing %s from %s", dst, raw)
    n = write_tsv(c.convert(raw), dst)
    if n == 0:
        raise UserError(f"{raw} gave no passages: is it the {corpus} file from {c.url}?")
    log.info("%d passages -> %s", n, dst)
    return dst
