"""Download datasets and turn them into the formats the loaders read.

Run on a machine with internet::

    python -m rucai.data.download amazon18 --category Office_Products --out data/amazon18/Office_Products
    python -m rucai.data.download recbole --name ml-100k --out data/

then pass the folder as ``data.dir=...``. ``amazon18 --out`` receives the four files directly
(``item_index.json``/``user_index.json`` carry no category prefix: use one folder per category).
Offline, every network failure becomes a one-line :class:`DownloadError` ("cannot reach <url>
(...): no network? ..."); the CLI prints it as ``error: ...`` on stderr and exits 2. Raw files
fetched elsewhere are preprocessed locally with ``amazon18 --reviews <file> --meta <file>``.

Amazon Reviews 2018 (Ni, Li & McAuley, EMNLP 2019)
--------------------------------------------------
Sources (``{base}`` is tried in this order; the first is the current McAuley-lab host, the others
are older hosts of the same files)::

    {base}/categoryFilesSmall/<Category>_5.json.gz    5-core reviews (default, --source 5core)
    {base}/categoryFilesSmall/<Category>.csv          ratings only   (--source ratings, as LC-Rec)
    {base}/metaFiles2/meta_<Category>.json.gz         metadata
    base = https://mcauleylab.ucsd.edu/public_datasets/data/amazon_v2
           https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_v2
           https://jmcauley.ucsd.edu/data/amazon_v2

Output (in ``out_dir``; the same layout the LC-Rec/TIGER reproductions ship and that
``rucai.data.amazon.load_lcrec`` reads): ``<Category>.inter.json`` {user_idx: [item_idx, ...]}
chronological; ``<Category>.item.json`` {item_idx: {title, description, brand}};
``item_index.json`` {asin: item_idx}; ``user_index.json`` {reviewerID: user_idx}. Indices are
0-based and contiguous; JSON keys are strings, list values ints; written with ``indent=4``.

Preprocessing follows LC-Rec ``data_process/amazon18_data_process.py`` + ``utils.clean_text``
(github.com/zhengbw0324/LC-Rec, the RUCAIBox paper's code), reimplemented here:

* follows: drop items without a metadata record; drop repeated (user, item) pairs keeping the
  earliest; iterative user/item k-core with k=5 until nothing changes; each user's items sorted by
  ``unixReviewTime``. Text: title and description go through LC-Rec's cleaning (``html.unescape``,
  strip ``<tags>``, remove ``"``, ``\\n``, ``\\r``; a list description is cleaned element-wise and
  joined with spaces; trailing dots collapsed to exactly one ``.``; a text of 2000+ characters
  becomes ``""``); brand is ``brand.replace("by\\n", "").strip()``.
* deviates:
  - reviews come from the 5-core JSON file by default; LC-Rec reads the ratings-only CSV
    (``--source ratings`` does that). k-core is re-applied either way, after the metadata filter.
  - index order is deterministic: users and items are numbered by first appearance in the raw
    review file (McAuley's files are ordered by asin, so item indices follow ASIN order). This is
    what the shipped ``amazon18_office`` copy shows; LC-Rec numbers them by iterating a Python
    ``set``, which changes with ``PYTHONHASHSEED``. Equal timestamps keep file order.
  - an empty text stays ``""`` (LC-Rec turns it into ``"."``); empty list elements are skipped.
  - ``item.json`` holds title/description/brand only (LC-Rec also writes ``categories``);
    index maps are JSON (``item_index.json``/``user_index.json``) instead of LC-Rec's TSV
    ``.user2id``/``.item2id``; LC-Rec's RecBole-style ``.train/.valid/.test.inter`` splits are
    not written (the loaders split leave-one-out themselves).
  - missing metadata fields count as empty instead of raising ``KeyError``; metadata lines that
    are Python literals (the older ``metaFiles``/2014 format) are read with ``ast.literal_eval``.
  Note: the shipped ``/work/shared/data/amazon18_office`` copy (from UniTok) does not use LC-Rec's
  text cleaning (no trailing ``.``, no length cap, entities kept), and its size (4,905 users,
  2,420 items, 53,258 interactions) looks like the 2014 Office 5-core rather than 2018's, so
  output from this module matches its format, not its contents.

RecBole atomic datasets
-----------------------
``https://recbole.s3-accelerate.amazonaws.com/ProcessedDatasets/...`` (RecBole's
``recbole/properties/dataset/url.yaml``). The zip's ``.inter/.item/.user`` (and ``.kg/.link/.net``)
files are extracted into ``out_dir/<name>/`` and renamed ``<name>.<suffix>``, as RecBole does.

Downloads stream to a hidden ``.part`` file in the target folder and are renamed into place only
when complete; any failure deletes the partial file. Present outputs are reused unless ``force``.
"""

from __future__ import annotations

import argparse
import ast
import collections
import contextlib
import gzip
import html
import http.client
import json
import os
import re
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

try:  # one-line errors through the dispatcher; falls back when run from a bare checkout
    from rucai.errors import UserError as _ErrorBase
except ImportError:  # pragma: no cover
    _ErrorBase = RuntimeError  # type: ignore[assignment,misc]

__all__ = [
    "AMAZON18_BASE_URLS",
    "RECBOLE_URLS",
    "AMAZON23_BASE_URLS",
    "amazon23_urls",
    "download_amazon23",
    "download_amazon23_images",
    "DownloadError",
    "amazon18_outputs",
    "clean_text",
    "download_amazon18",
    "download_recbole",
    "download_still",
    "fetch",
    "k_core",
    "main",
    "preprocess_amazon18",
]

CONNECT_TIMEOUT = 15.0  # seconds to open a connection (DNS + TCP + TLS + first response)
READ_TIMEOUT = 120.0  # seconds of silence tolerated once bytes are flowing
CHUNK = 1 << 20
USER_AGENT = "rucai-download/0.1 (python-urllib)"
FIX = "download it on a machine with internet and pass data.dir=<folder>"

AMAZON18_BASE_URLS: tuple[str, ...] = (
    "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_v2",
    "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_v2",
    "https://jmcauley.ucsd.edu/data/amazon_v2",
)

# Amazon 2018 category file names, and the short names LC-Rec's scripts accept (`--dataset Office`).
AMAZON18_CATEGORIES: tuple[str, ...] = (
    "AMAZON_FASHION", "All_Beauty", "Appliances", "Arts_Crafts_and_Sewing", "Automotive", "Books",
    "CDs_and_Vinyl", "Cell_Phones_and_Accessories", "Clothing_Shoes_and_Jewelry", "Digital_Music",
    "Electronics", "Gift_Cards", "Grocery_and_Gourmet_Food", "Home_and_Kitchen",
    "Industrial_and_Scientific", "Kindle_Store", "Luxury_Beauty", "Magazine_Subscriptions",
    "Movies_and_TV", "Musical_Instruments", "Office_Products", "Patio_Lawn_and_Garden",
    "Pet_Supplies", "Prime_Pantry", "Software", "Sports_and_Outdoors", "Tools_and_Home_Improvement",
    "Toys_and_Games", "Video_Games",
)  # fmt: skip
LCREC_SHORT_NAMES: dict[str, str] = {
    "Beauty": "All_Beauty", "Fashion": "AMAZON_FASHION", "Arts": "Arts_Crafts_and_Sewing",
    "CDs": "CDs_and_Vinyl", "Cell": "Cell_Phones_and_Accessories", "Clothing": "Clothing_Shoes_and_Jewelry",
    "Music": "Digital_Music", "Gift": "Gift_Cards", "Food": "Grocery_and_Gourmet_Food",
    "Home": "Home_and_Kitchen", "Scientific": "Industrial_and_Scientific", "Kindle": "Kindle_Store",
    "Luxury": "Luxury_Beauty", "Magazine": "Magazine_Subscriptions", "Movies": "Movies_and_TV",
    "Instruments": "Musical_Instruments", "Office": "Office_Products", "Garden": "Patio_Lawn_and_Garden",
    "Pet": "Pet_Supplies", "Pantry": "Prime_Pantry", "Sports": "Sports_and_Outdoors",
    "Tools": "Tools_and_Home_Improvement", "Toys": "Toys_and_Games", "Games": "Video_Games",
}  # fmt: skip

_RECBOLE = "https://recbole.s3-accelerate.amazonaws.com/ProcessedDatasets"
RECBOLE_URLS: dict[str, str] = {
    "ml-100k": f"{_RECBOLE}/MovieLens/ml-100k.zip",
    "ml-1m": f"{_RECBOLE}/MovieLens/ml-1m.zip",
    "ml-10m": f"{_RECBOLE}/MovieLens/ml-10m.zip",
    "ml-20m": f"{_RECBOLE}/MovieLens/ml-20m.zip",
    "amazon-beauty": f"{_RECBOLE}/Amazon_ratings/Amazon_Beauty.zip",
    "amazon-sports-outdoors": f"{_RECBOLE}/Amazon_ratings/Amazon_Sports_and_Outdoors.zip",
    "amazon-toys-games": f"{_RECBOLE}/Amazon_ratings/Amazon_Toys_and_Games.zip",
    "amazon-books": f"{_RECBOLE}/Amazon_ratings/Amazon_Books.zip",
    "lastfm": f"{_RECBOLE}/LastFM/lastfm.zip",
    "yelp": f"{_RECBOLE}/Yelp/yelp.zip",
    "gowalla-merged": f"{_RECBOLE}/Gowalla/merged/gowalla.zip",
}
ATOMIC_SUFFIXES = (".inter", ".item", ".user", ".kg", ".link", ".net")


class DownloadError(_ErrorBase):
    """A download (or a downloaded file) failed. The message is one line and names the fix."""

    def __init__(self, message: str):
        super().__init__(_one_line(message))


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# fetching
# --------------------------------------------------------------------------------------------


def _reason(exc: BaseException) -> str:
    """Short human text for a network exception (urllib wraps the real one in .reason)."""
    inner = getattr(exc, "reason", None)
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(inner, BaseException):
        exc = inner
    elif inner:
        return str(inner)
    if isinstance(exc, socket.gaierror):
        return f"DNS lookup failed: {exc.strerror or exc}"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _set_read_timeout(resp: object, seconds: float) -> None:
    """Lengthen the socket timeout once connected (urllib has a single timeout for both)."""
    sock = getattr(getattr(getattr(resp, "fp", None), "raw", None), "_sock", None)
    with contextlib.suppress(OSError, AttributeError):
        if sock is not None:
            sock.settimeout(seconds)


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


class _LocalWriteError(Exception):
    """Writing the download to disk failed (not a network problem)."""


def _stream_to(url: str, fh, timeout: float, read_timeout: float, quiet: bool) -> int:
    """GET `url` into the open binary file `fh`. Network errors propagate unchanged."""
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        _set_read_timeout(resp, read_timeout)
        total = int(resp.headers.get("Content-Length") or 0)
        _log(f"downloading {url}" + (f" ({_human(total)})" if total else ""), quiet)
        done, last = 0, 0.0
        tty = not quiet and sys.stderr.isatty()
        while True:
            chunk = resp.read(CHUNK)
            if not chunk:
                break
            try:
                fh.write(chunk)
            except OSError as e:
                raise _LocalWriteError(e.strerror or str(e)) from e
            done += len(chunk)
            now = time.monotonic()
            if tty and now - last > 0.5:
                pct = f" {100 * done / total:5.1f}%" if total else ""
                print(f"\r  {_human(done)}{pct}", end="", file=sys.stderr, flush=True)
                last = now
        if tty:
            print("\r", end="", file=sys.stderr)
        if total and done != total:
            raise http.client.IncompleteRead(b"", total - done)
        return done


def fetch(
    urls: str | Sequence[str],
    dest: str | os.PathLike,
    *,
    force: bool = False,
    timeout: float = CONNECT_TIMEOUT,
    read_timeout: float = READ_TIMEOUT,
    quiet: bool = False,
) -> Path:
    """Download the first reachable of `urls` to `dest` atomically; reuse `dest` if present.

    Mirrors are tried in order after an HTTP error, refusal, timeout or cut connection; a DNS
    failure means no network at all and stops at once. Every failure raises
    :class:`DownloadError` with a one-line message; no partial file is left behind.
    """
    dest = Path(dest)
    urls = [urls] if isinstance(urls, str) else list(urls)
    if not urls:
        raise ValueError("fetch() needs at least one URL")
    if dest.is_file() and dest.stat().st_size > 0 and not force:
        _log(f"using existing {dest}", quiet)
        return dest
    with _new_dirs_removed_on_error(dest.parent):
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DownloadError(f"cannot create {dest.parent} ({_reason(e)}): pick another --out") from None
        return _fetch_into(urls, dest, timeout, read_timeout, quiet)


@contextlib.contextmanager
def _new_dirs_removed_on_error(folder: Path) -> Iterator[None]:
    """On an exception, remove `folder` and the parents that did not exist before, if empty."""
    created = [d for d in (folder, *folder.parents) if not d.exists()]
    try:
        yield
    except BaseException:
        for d in created:  # innermost first
            with contextlib.suppress(OSError):
                d.rmdir()
        raise


def _fetch_into(urls: list[str], dest: Path, timeout: float, read_timeout: float, quiet: bool) -> Path:
    failures: list[str] = []
    http_only = True
    for url in urls:
        try:
            fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        except OSError as e:
            raise DownloadError(
                f"cannot write into {dest.parent} ({_reason(e)}): pick another --out"
            ) from None
        try:
            with os.fdopen(fd, "wb") as fh:
                size = _stream_to(url, fh, timeout, read_timeout, quiet)
            os.replace(tmp_name, dest)
            _log(f"saved {dest} ({_human(size)})", quiet)
            return dest
        except _LocalWriteError as e:
            raise DownloadError(
                f"cannot write {dest} ({e}): free some disk space or pick another --out"
            ) from None
        except urllib.error.HTTPError as e:  # the server answered; try the next mirror
            failures.append(f"{url} ({_reason(e)})")
        except (OSError, http.client.HTTPException, ValueError) as e:
            # URLError (DNS, refused, TLS), timeouts, resets, IncompleteRead, malformed URLs.
            http_only = False
            if isinstance(e, http.client.IncompleteRead):
                failures.append(f"{url} (connection dropped with {e.expected} bytes missing)")
            else:
                failures.append(f"{url} ({_reason(e)})")
            if isinstance(getattr(e, "reason", e), socket.gaierror):
                break  # name resolution failed: no network; other mirrors will not do better
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
    more = f" (and {len(failures) - 1} mirror(s))" if len(failures) > 1 else ""
    if http_only:
        raise DownloadError(
            f"cannot download {failures[0]}{more}: the file may have moved; pass --url/--base-url or {FIX}"
        )
    raise DownloadError(f"cannot reach {failures[0]}{more}: no network? {FIX}")


# --------------------------------------------------------------------------------------------
# Amazon 2018 -> LC-Rec format
# --------------------------------------------------------------------------------------------


def resolve_category(category: str) -> str:
    """`Office_Products`, `office_products` or LC-Rec's `Office` -> `Office_Products`."""
    if category in AMAZON18_CATEGORIES:
        return category
    if category in LCREC_SHORT_NAMES:
        return LCREC_SHORT_NAMES[category]
    folded = {c.lower(): c for c in AMAZON18_CATEGORIES} | {
        k.lower(): v for k, v in LCREC_SHORT_NAMES.items()
    }
    if category.lower() in folded:
        return folded[category.lower()]
    # Unknown but plausible names still go through: the server answers 404 if they are wrong.
    if re.fullmatch(r"[A-Za-z0-9_]+", category):
        return category
    raise DownloadError(f"bad Amazon category {category!r}: use a file name such as Office_Products")


def amazon18_outputs(out_dir: str | os.PathLike, category: str) -> list[Path]:
    d = Path(out_dir)
    return [
        d / f"{category}.inter.json",
        d / f"{category}.item.json",
        d / "item_index.json",
        d / "user_index.json",
    ]


def amazon18_urls(category: str, source: str = "5core", base_urls: Sequence[str] = AMAZON18_BASE_URLS):
    """(review URLs, meta URLs, review file name, meta file name) for one category."""
    if source not in ("5core", "ratings"):
        raise ValueError(f"source must be '5core' or 'ratings', not {source!r}")
    review_name = f"{category}_5.json.gz" if source == "5core" else f"{category}.csv"
    meta_name = f"meta_{category}.json.gz"
    bases = [b.rstrip("/") for b in base_urls]
    return (
        [f"{b}/categoryFilesSmall/{review_name}" for b in bases],
        [f"{b}/metaFiles2/{meta_name}" for b in bases],
        review_name,
        meta_name,
    )


_TAG = re.compile(r"</?\w+[^>]*>")
_QUOTE_NL = re.compile(r'["\n\r]')


def _clean_piece(text: str) -> str:
    return _QUOTE_NL.sub("", _TAG.sub("", html.unescape(text))).strip()


def clean_text(raw: object, max_len: int = 2000) -> str:
    """LC-Rec's text cleaning (see module docstring); empty stays empty."""
    if raw is None:
        return ""
    if isinstance(raw, list | tuple):
        text = " ".join(p for p in (_clean_piece(str(x)) for x in raw if x is not None) if p)
    elif isinstance(raw, dict):
        text = _clean_piece(str(raw)[1:-1])
    else:
        text = _clean_piece(str(raw))
    text = text.rstrip(".")
    if not text:
        return ""
    text += "."
    return "" if len(text) >= max_len else text


def _clean_brand(raw: object) -> str:
    if not raw:
        return ""
    return str(raw).replace("by\n", "").strip()


@contextlib.contextmanager
def _open_text(path: Path) -> Iterator[Iterable[str]]:
    """Open .gz or plain text; turn decompression damage into a one-line DownloadError."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
            yield fh
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DownloadError(
            f"{path} is truncated or corrupt ({_one_line(e) or type(e).__name__}): "
            "delete it or rerun with --force"
        ) from None


def _parse_line(line: str) -> dict | None:
    line = line.strip()
    if not line:
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        try:  # older McAuley files are Python dict literals
            obj = ast.literal_eval(line)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return None
    return obj if isinstance(obj, dict) else None


def read_reviews(path: str | os.PathLike) -> tuple[list[tuple[str, str, int]], int]:
    """Raw interactions in file order as (user, item, unix_time), and the number of bad lines.

    `*.json(.gz)`: one review per line with reviewerID/asin/unixReviewTime.
    `*.csv(.gz)`: ratings-only rows `item,user,rating,timestamp` (no header).
    """
    path = Path(path)
    inters: list[tuple[str, str, int]] = []
    bad = 0
    is_csv = path.name.endswith((".csv", ".csv.gz"))
    with _open_text(path) as fh:
        for line in fh:
            if is_csv:
                parts = line.strip().split(",")
                if len(parts) != 4:
                    bad += bool(line.strip())
                    continue
                item, user, _rating, ts = parts
            else:
                rec = _parse_line(line)
                if rec is None:
                    bad += bool(line.strip())
                    continue
                user, item, ts = rec.get("reviewerID"), rec.get("asin"), rec.get("unixReviewTime")
            try:
                t = int(float(ts))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                bad += 1
                continue
            if not user or not item:
                bad += 1
                continue
            inters.append((str(user), str(item), t))
    return inters, bad


def read_meta(path: str | os.PathLike, wanted: set[str] | None = None) -> dict[str, dict[str, str]]:
    """asin -> {title, description, brand}, cleaned; only asins in `wanted` when given.

    A repeated asin keeps its last record (as LC-Rec's dict assignment does).
    """
    items: dict[str, dict[str, str]] = {}
    with _open_text(Path(path)) as fh:
        for line in fh:
            rec = _parse_line(line)
            if rec is None:
                continue
            asin = rec.get("asin")
            if not asin or (wanted is not None and asin not in wanted):
                continue
            items[str(asin)] = {
                "title": clean_text(rec.get("title")),
                "description": clean_text(rec.get("description")),
                "brand": _clean_brand(rec.get("brand")),
            }
    return items


def _dedup_chronological(inters: list[tuple[int, str, str, int]]) -> list[tuple[int, str, str, int]]:
    """Per user: sort by (time, file position); keep the first (earliest) of repeated items."""
    by_user: dict[str, list[tuple[int, str, str, int]]] = collections.defaultdict(list)
    for rec in inters:
        by_user[rec[1]].append(rec)
    out: list[tuple[int, str, str, int]] = []
    for recs in by_user.values():
        recs.sort(key=lambda r: (r[3], r[0]))
        seen: set[str] = set()
        for rec in recs:
            if rec[2] not in seen:
                seen.add(rec[2])
                out.append(rec)
    return out


def k_core(inters: list, user_k: int = 5, item_k: int = 5, user_at: int = 1, item_at: int = 2) -> list:
    """Iteratively drop interactions of users with < user_k or items with < item_k interactions."""
    while True:
        users = collections.Counter(r[user_at] for r in inters)
        items = collections.Counter(r[item_at] for r in inters)
        if all(c >= user_k for c in users.values()) and all(c >= item_k for c in items.values()):
            return inters
        inters = [r for r in inters if users[r[user_at]] >= user_k and items[r[item_at]] >= item_k]


def _write_json_atomic(path: Path, obj: object) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=4)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def preprocess_amazon18(
    reviews_path: str | os.PathLike,
    meta_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    category: str,
    *,
    user_k: int = 5,
    item_k: int = 5,
    quiet: bool = False,
) -> dict[str, int]:
    """Raw Amazon review + metadata files -> the four LC-Rec JSON files in `out_dir`.

    No network. Returns counts (raw/kept interactions, users, items, dropped lines...).
    """
    out_dir = Path(out_dir)
    raw, bad_lines = read_reviews(reviews_path)
    if not raw:
        raise DownloadError(f"{reviews_path} holds no readable reviews: delete it or rerun with --force")
    wanted = {r[1] for r in raw}
    meta = read_meta(meta_path, wanted)

    inters = [(pos, u, i, t) for pos, (u, i, t) in enumerate(raw)]
    inters = _dedup_chronological(inters)
    n_dedup = len(inters)
    inters = [r for r in inters if r[2] in meta]
    n_meta = len(inters)
    inters = k_core(inters, user_k, item_k)
    if not inters:
        raise DownloadError(
            f"no interactions survive {user_k}/{item_k}-core filtering of {reviews_path}: "
            "wrong or truncated file?"
        )

    # Number users and items by first appearance in the raw file (deterministic; see docstring).
    user_index: dict[str, int] = {}
    item_index: dict[str, int] = {}
    for _pos, u, i, _t in sorted(inters):
        user_index.setdefault(u, len(user_index))
        item_index.setdefault(i, len(item_index))
    seqs: dict[int, list[tuple[int, int, int]]] = collections.defaultdict(list)
    for pos, u, i, t in inters:
        seqs[user_index[u]].append((t, pos, item_index[i]))
    inter_json = {str(uid): [iid for _t, _p, iid in sorted(seqs[uid])] for uid in range(len(user_index))}
    item_json = {str(iid): meta[asin] for asin, iid in item_index.items()}

    out_dir.mkdir(parents=True, exist_ok=True)
    inter_p, item_p, item_idx_p, user_idx_p = amazon18_outputs(out_dir, category)
    _write_json_atomic(item_idx_p, item_index)
    _write_json_atomic(user_idx_p, user_index)
    _write_json_atomic(item_p, item_json)
    _write_json_atomic(inter_p, inter_json)  # last: its presence marks a finished run

    stats = {
        "raw_interactions": len(raw),
        "bad_lines": bad_lines,
        "after_dedup": n_dedup,
        "after_meta_filter": n_meta,
        "interactions": len(inters),
        "users": len(user_index),
        "items": len(item_index),
    }
    _log(
        f"{category}: {stats['users']} users, {stats['items']} items, {stats['interactions']} interactions "
        f"(raw {stats['raw_interactions']}, deduplicated {n_dedup}, with metadata {n_meta}) -> {out_dir}",
        quiet,
    )
    return stats


def download_amazon18(
    category: str,
    out_dir: str | os.PathLike,
    *,
    source: str = "5core",
    user_k: int = 5,
    item_k: int = 5,
    force: bool = False,
    keep_raw: bool = True,
    base_urls: Sequence[str] = AMAZON18_BASE_URLS,
    reviews_file: str | os.PathLike | None = None,
    meta_file: str | os.PathLike | None = None,
    timeout: float = CONNECT_TIMEOUT,
    quiet: bool = False,
) -> Path:
    """Download one Amazon 2018 category and write the LC-Rec files into `out_dir`.

    Raw files go to `out_dir/raw/` (kept unless `keep_raw=False`). `reviews_file`/`meta_file`
    use local raw files instead of downloading. Returns `out_dir`.
    """
    category = resolve_category(category)
    out_dir = Path(out_dir)
    outputs = amazon18_outputs(out_dir, category)
    if not force and all(p.is_file() for p in outputs):
        _log(f"{category}: {out_dir} is already prepared (use --force to redo)", quiet)
        return out_dir
    review_urls, meta_urls, review_name, meta_name = amazon18_urls(category, source, base_urls)
    raw_dir = out_dir / "raw"
    fetched: list[Path] = []
    if reviews_file is None:
        reviews_path = fetch(review_urls, raw_dir / review_name, force=force, timeout=timeout, quiet=quiet)
        fetched.append(reviews_path)
    else:
        reviews_path = Path(reviews_file)
    if meta_file is None:
        meta_path = fetch(meta_urls, raw_dir / meta_name, force=force, timeout=timeout, quiet=quiet)
        fetched.append(meta_path)
    else:
        meta_path = Path(meta_file)
    for p in (reviews_path, meta_path):
        if not p.is_file():
            raise DownloadError(f"{p} not found: pass an existing file or drop the option to download it")
    preprocess_amazon18(reviews_path, meta_path, out_dir, category, user_k=user_k, item_k=item_k, quiet=quiet)
    if not keep_raw:
        for p in fetched:
            p.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            raw_dir.rmdir()
    return out_dir


# --------------------------------------------------------------------------------------------
# RecBole atomic files
# --------------------------------------------------------------------------------------------


def _extract_atomic(zip_path: Path, target: Path, name: str) -> list[Path]:
    """Extract atomic files from the zip (flattened) into target as <name>.<suffix>, atomically."""
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as e:
        raise DownloadError(f"{zip_path} is not a valid zip ({_one_line(e)}): rerun with --force") from None
    written: list[Path] = []
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir() and Path(m.filename).suffix in ATOMIC_SUFFIXES]
        members = [m for m in members if not Path(m.filename).name.startswith(("._", "."))]
        if not members:
            raise DownloadError(f"{zip_path} holds no RecBole atomic files (.inter/.item/.user): wrong URL?")
        target.mkdir(parents=True, exist_ok=True)
        for m in members:
            dest = target / f"{name}{Path(m.filename).suffix}"
            fd, tmp = tempfile.mkstemp(dir=target, prefix=f".{dest.name}.", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as out, zf.open(m) as src:
                    while chunk := src.read(CHUNK):
                        out.write(chunk)
                os.replace(tmp, dest)
            except (zipfile.BadZipFile, zlib.error, EOFError) as e:
                raise DownloadError(f"{zip_path} is corrupt ({_one_line(e)}): rerun with --force") from None
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            written.append(dest)
    return written


def download_recbole(
    name: str,
    out_dir: str | os.PathLike,
    *,
    url: str | None = None,
    force: bool = False,
    keep_zip: bool = False,
    timeout: float = CONNECT_TIMEOUT,
    quiet: bool = False,
) -> Path:
    """Download a RecBole atomic dataset into `out_dir/<name>/<name>.inter` (etc). Returns that folder."""
    if url is None:
        if name not in RECBOLE_URLS:
            known = ", ".join(sorted(RECBOLE_URLS))
            raise DownloadError(
                f"no known URL for RecBole dataset {name!r} (known: {known}); pass --url from RecBole's "
                "recbole/properties/dataset/url.yaml"
            )
        url = RECBOLE_URLS[name]
    out_dir = Path(out_dir)
    target = out_dir / name
    if not force and (target / f"{name}.inter").is_file():
        _log(f"{name}: {target} is already prepared (use --force to redo)", quiet)
        return target
    zip_path = out_dir / Path(url.split("?", 1)[0]).name
    with _new_dirs_removed_on_error(out_dir):
        fetch(url, zip_path, force=force, timeout=timeout, quiet=quiet)
        try:
            written = _extract_atomic(zip_path, target, name)
        except DownloadError:
            zip_path.unlink(missing_ok=True)  # a bad zip must not be reused next time
            raise
    if not keep_zip:
        zip_path.unlink(missing_ok=True)
    _log(f"{name}: wrote {', '.join(p.name for p in written)} -> {target}", quiet)
    return target


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# Amazon 2023 benchmark files (used as published: no preprocessing)
# --------------------------------------------------------------------------------------------

# The MTGRec/UTGRec/CCFRec categories and their short names.
AMAZON23_CATEGORIES = {
    "instruments": "Musical_Instruments",
    "scientific": "Industrial_and_Scientific",
    "games": "Video_Games",
    "office": "Office_Products",
    "baby": "Baby_Products",
}

AMAZON23_BASE_URLS: tuple[str, ...] = (
    "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_2023",
    "https://huggingface.co/datasets/McAuley-Lab/Amazon-Reviews-2023/resolve/main",
)


def amazon23_urls(category: str, base_urls: Sequence[str] = AMAZON23_BASE_URLS) -> dict[str, list[str]]:
    """file name -> mirror URLs for the 5-core last-out-with-history splits and the item metadata."""
    files = {f"{category}.{s}.csv.gz": f"benchmark/5core/last_out_w_his/{category}.{s}.csv.gz"
             for s in ("train", "valid", "test")}
    files[f"meta_{category}.jsonl.gz"] = f"raw/meta_categories/meta_{category}.jsonl.gz"
    return {name: [f"{b.rstrip('/')}/{rel}" for b in base_urls] for name, rel in files.items()}


def download_amazon23(
    category: str,
    out_dir: str | os.PathLike,
    *,
    force: bool = False,
    base_urls: Sequence[str] = AMAZON23_BASE_URLS,
    timeout: float = CONNECT_TIMEOUT,
    quiet: bool = False,
) -> list[Path]:
    """Fetch `<Category>.{train,valid,test}.csv.gz` and `meta_<Category>.jsonl.gz` into `out_dir`."""
    category = AMAZON23_CATEGORIES.get(category, category)
    out = Path(out_dir)
    return [fetch(urls, out / name, force=force, timeout=timeout, quiet=quiet)
            for name, urls in amazon23_urls(category, base_urls).items()]


def main_image_url(images: Sequence[dict], size: str = "large") -> str | None:
    """The authors' `mm_data_download.py` choice from an Amazon 2023 item's `images`: the entry whose
    variant is MAIN (else the first), its `size` URL (else its last one); None without images."""
    if not images:
        return None
    main = next((im for im in images if str(im.get("variant", "")).lower() == "main"), images[0])
    urls = {k: v for k, v in main.items() if k != "variant" and v}
    return urls.get(size) or (list(urls.values())[-1] if urls else None)


def amazon23_image_urls(data_dir: str | os.PathLike, category: str, size: str = "large") -> dict[str, str]:
    """parent_asin -> the URL of its main image, for every item of the category's 5-core splits in
    `data_dir` (the authors' `mm_data_download.py` choice: the MAIN variant, else the first image;
    its `size` URL, else the last one listed). Items without images are left out."""
    import csv
    import gzip
    import json


    category = AMAZON23_CATEGORIES.get(category, category)
    d = Path(data_dir)
    asins: set[str] = set()
    for split in ("train", "valid", "test"):
        f = d / f"{category}.{split}.csv.gz"
        if not f.is_file():
            raise DownloadError(f"{f} not found: python -m rucai.data.download amazon23 --category {category} --out {d}")
        with gzip.open(f, "rt", encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                asins.add(row["parent_asin"])
                asins.update((row.get("history") or "").split())
    meta = d / f"meta_{category}.jsonl.gz"
    if not meta.is_file():
        raise DownloadError(f"{meta} not found: python -m rucai.data.download amazon23 --category {category} --out {d}")
    urls: dict[str, str] = {}
    with gzip.open(meta, "rt", encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            a = rec.get("parent_asin")
            if a in asins:
                url = main_image_url(rec.get("images") or [], size)
                if url:
                    urls[a] = url
    return urls


def download_amazon23_images(category: str, data_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                             *, size: str = "large", force: bool = False, timeout: float = CONNECT_TIMEOUT,
                             quiet: bool = False) -> dict[str, int]:
    """Each item's main image as `<out_dir>/<parent_asin>.jpg` (default `<data_dir>/images`, one folder
    for every category: ASINs are unique),
    for UTGRec's image branch (`method.tokenizer.image_dir`). Existing files are kept; an image the
    server refuses is skipped and counted (the authors go on without it); no network stops at once."""
    category = AMAZON23_CATEGORIES.get(category, category)
    urls = amazon23_image_urls(data_dir, category, size)
    out = Path(out_dir) if out_dir is not None else Path(data_dir) / "images"
    counts = {"items_with_image": len(urls), "downloaded_or_kept": 0, "failed": 0}
    for asin, url in sorted(urls.items()):
        try:
            fetch(url, out / f"{asin}.jpg", force=force, timeout=timeout, quiet=True)
            counts["downloaded_or_kept"] += 1
        except DownloadError as e:
            if "no network" in str(e):
                raise
            counts["failed"] += 1
    _log(f"{category}: {counts['downloaded_or_kept']} of {counts['items_with_image']} images in {out} "
         f"({counts['failed']} refused by the server)", quiet)
    return counts


# ReDial / INSPIRED test dialogues in the format `rucai.grsu.data` reads (He et al.'s zero-shot CRS
# release, pinned commit; the GRSU authors process the same CRSLab data into their own jsonl)
CRS_BASE_URL = ("https://raw.githubusercontent.com/AaronHeee/LLMs-as-Zero-Shot-Conversational-RecSys/"
                "5a52caa19cd514f8d39811483c41e43107d5927f/data")
CRS_FILES = ("test.jsonl", "item_ids.json", "entity2id.json")


def download_crs(name: str, out_dir: str | os.PathLike, *, force: bool = False, base_url: str = CRS_BASE_URL,
                 timeout: float = CONNECT_TIMEOUT, quiet: bool = False) -> list[Path]:
    """Fetch `<name>` (redial | inspired): test.jsonl, item_ids.json, entity2id.json into `out_dir`."""
    if name not in ("redial", "inspired"):
        raise DownloadError(f"unknown conversational dataset {name!r}: use redial or inspired")
    out = Path(out_dir)
    return [fetch(f"{base_url.rstrip('/')}/{name}/{f}", out / f, force=force, timeout=timeout, quiet=quiet)
            for f in CRS_FILES]


# The STILL-2 long-form thought data (RUCAIBox, "Imitate, Explore, and Self-Improve"): 5k problems
# with <|begin_of_thought|> ... <|end_of_thought|> chains in math, physics, chemistry, biology, code
# and puzzles; JSON lines {question, combined_text, domain}. GLoRE's authors take their long CoTs
# from it (their demonstration files are not published). Not verified from this offline machine:
# pass --url when the dataset's file moves.
STILL_URL = ("https://huggingface.co/datasets/RUC-AIBox/long_form_thought_data_5k/resolve/main/"
             "long_form_thought_data_5k.jsonl")


def download_still(out_dir: str | os.PathLike, *, url: str = STILL_URL, force: bool = False,
                   timeout: float = CONNECT_TIMEOUT, quiet: bool = False) -> Path:
    """Fetch the STILL long-form thought data to `out_dir/long_form_thought_data_5k.jsonl` (use it as
    `method.long_cot=<file> method.long_cot_domain=math` in experiment=glore/*)."""
    return fetch(url, Path(out_dir) / "long_form_thought_data_5k.jsonl", force=force, timeout=timeout, quiet=quiet)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m rucai.data.download",
        description="Download datasets (needs internet) and prepare them for data.dir=<folder>.",
    )
    sub = p.add_subparsers(dest="cmd", required=True)

    a = sub.add_parser("amazon18", help="Amazon Reviews 2018 category -> LC-Rec/TIGER JSON files")
    a.add_argument(
        "--category", required=True, help="e.g. Office_Products (LC-Rec short names like Office work)"
    )
    a.add_argument(
        "--out", required=True, help="folder that receives <Category>.inter.json etc. (use as data.dir)"
    )
    a.add_argument(
        "--source",
        choices=("5core", "ratings"),
        default="5core",
        help="5-core review JSON (default) or the ratings-only CSV LC-Rec starts from",
    )
    a.add_argument("--k", type=int, default=5, help="user and item k-core threshold (default 5)")
    a.add_argument("--reviews", help="use this local review file (.json.gz or .csv) instead of downloading")
    a.add_argument("--meta", help="use this local meta_<Category>.json.gz instead of downloading")
    a.add_argument(
        "--base-url", action="append", help="mirror base URL (repeatable; default: McAuley lab hosts)"
    )
    a.add_argument("--no-keep-raw", action="store_true", help="delete the raw downloads after preprocessing")

    z = sub.add_parser("amazon23", help="Amazon Reviews 2023 5-core last-out-with-history splits + item metadata")
    z.add_argument("--category", required=True,
                   help="e.g. Musical_Instruments, Industrial_and_Scientific, Video_Games (or instruments/scientific/games)")
    z.add_argument("--out", required=True, help="folder that receives the files (use as data.dir)")
    z.add_argument("--base-url", action="append", help="mirror base URL (repeatable; default: McAuley lab, HF)")

    im = sub.add_parser("amazon23-images", help="each Amazon 2023 item's main image (UTGRec's image branch)")
    im.add_argument("--category", required=True, help="as for amazon23")
    im.add_argument("--data-dir", required=True, help="the folder `amazon23` downloaded into (splits + meta)")
    im.add_argument("--out", help="folder for <parent_asin>.jpg (default <data-dir>/images, shared by the categories)")
    im.add_argument("--size", default="large", help="image size key (default large, the authors')")

    r = sub.add_parser("recbole", help="RecBole atomic dataset zip -> <out>/<name>/<name>.inter/.item/.user")
    r.add_argument(
        "--name", required=True, help=f"dataset name ({', '.join(sorted(RECBOLE_URLS))}, or any with --url)"
    )
    r.add_argument("--out", default="data", help="parent folder (default: data)")
    r.add_argument("--url", help="zip URL (see RecBole's recbole/properties/dataset/url.yaml)")
    r.add_argument("--keep-zip", action="store_true")

    c = sub.add_parser("redial", help="ReDial test dialogues (zero-shot CRS format) for experiment=grsu/*")
    c.add_argument("--out", required=True, help="folder that receives test.jsonl, item_ids.json, entity2id.json")
    i = sub.add_parser("inspired", help="INSPIRED test dialogues (zero-shot CRS format) for experiment=grsu/inspired")
    i.add_argument("--out", required=True, help="folder that receives test.jsonl, item_ids.json, entity2id.json")
    for s in (c, i):
        s.add_argument("--base-url", default=CRS_BASE_URL, help="where <name>/<file> lives")

    t = sub.add_parser("still", help="STILL long-form thought data (long CoTs for experiment=glore/*)")
    t.add_argument("--out", required=True, help="folder that receives long_form_thought_data_5k.jsonl")
    t.add_argument("--url", default=STILL_URL, help="the file's URL")

    for s in (a, z, im, r, c, i, t):
        s.add_argument("--force", action="store_true", help="download and rebuild even if outputs exist")
        s.add_argument("--timeout", type=float, default=CONNECT_TIMEOUT, help="connect timeout in seconds")
        s.add_argument("--quiet", action="store_true")
    return p  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "amazon18":
            download_amazon18(
                args.category,
                args.out,
                source=args.source,
                user_k=args.k,
                item_k=args.k,
                force=args.force,
                keep_raw=not args.no_keep_raw,
                base_urls=args.base_url or AMAZON18_BASE_URLS,
                reviews_file=args.reviews,
                meta_file=args.meta,
                timeout=args.timeout,
                quiet=args.quiet,
            )
        elif args.cmd in ("redial", "inspired"):
            download_crs(args.cmd, args.out, force=args.force, base_url=args.base_url, timeout=args.timeout,
                         quiet=args.quiet)
        elif args.cmd == "still":
            download_still(args.out, url=args.url, force=args.force, timeout=args.timeout, quiet=args.quiet)
        elif args.cmd == "amazon23-images":
            download_amazon23_images(args.category, args.data_dir, args.out, size=args.size, force=args.force,
                                     timeout=args.timeout, quiet=args.quiet)
        elif args.cmd == "amazon23":
            download_amazon23(args.category, args.out, force=args.force, base_urls=args.base_url or AMAZON23_BASE_URLS,
                              timeout=args.timeout, quiet=args.quiet)
        else:
            download_recbole(
                args.name, args.out, url=args.url, force=args.force, keep_zip=args.keep_zip,
                timeout=args.timeout, quiet=args.quiet,
            )  # fmt: skip
    except DownloadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # local disk trouble while preprocessing (permissions, full disk)
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted (partial downloads were removed)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
