"""rucai.data.download: Amazon 2018 -> LC-Rec preprocessing, offline failures, local-HTTP downloads.

Nothing here touches the internet: "remote" files are served by a throwaway HTTP server on
127.0.0.1, and the offline cases use a closed local port (127.0.0.1:9) or a patched urlopen.
"""

from __future__ import annotations

import collections
import functools
import gzip
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import zipfile
from pathlib import Path

import pytest

from rucai.data import download as dl
from rucai.data.download import DownloadError

REPO = Path(__file__).resolve().parents[1]
SHARED_OFFICE = Path("/work/shared/data/amazon18_office")
CLOSED = "http://127.0.0.1:9"  # discard port: nothing listens, connection refused at once
CAT = "Office_Products"

# ---------------------------------------------------------------------------------------------
# tiny raw Amazon 2018 files
# ---------------------------------------------------------------------------------------------

CORE_USERS = ["A3USERC", "A1USERA", "A6USERF", "A2USERB", "A5USERE", "A4USERD"]
CORE_ITEMS = ["B000000001", "B000000002", "B000000003", "B000000004", "B000000005"]
NO_META_ITEM = "B000000006"  # 5 core users review it, but it has no metadata -> dropped
SPARSE_ITEM = "B000000007"  # reviewed by 2 users -> item below 5-core
CASCADE_ITEM = "B000000008"  # 1 review by the cascade user
SHORT_USER = "A7SHORT"  # 4 reviews -> user below 5-core
CASCADE_USER = "A8CASCADE"  # 4 core items + CASCADE_ITEM; loses CASCADE_ITEM, then drops to 4


def _review(user: str, asin: str, t: int, overall: float = 5.0) -> dict:
    return {
        "overall": overall,
        "verified": True,
        "reviewTime": time.strftime("%m %d, %Y", time.gmtime(t)),
        "reviewerID": user,
        "asin": asin,
        "reviewerName": f"name of {user}",
        "reviewText": "Works fine.",
        "summary": "ok",
        "unixReviewTime": t,
    }


def _raw_reviews() -> list[dict]:
    """Reviews in McAuley's file order (grouped by asin), timestamps not chronological in file."""
    rows: list[dict] = []
    for k, asin in enumerate(CORE_ITEMS + [NO_META_ITEM]):
        users = CORE_USERS if asin != NO_META_ITEM else CORE_USERS[:5]
        for j, u in enumerate(users):
            # user u's time for item k: items visited in a per-user permuted order
            t = 1_400_000_000 + 86_400 * ((k * (j + 2) + j) % 6) + 10 * j
            rows.append(_review(u, asin, t))
        if asin == CORE_ITEMS[0]:
            # the short user appears before most core users would otherwise get an index
            rows.insert(1, _review(SHORT_USER, asin, 1_300_000_000))
            # repeated (user, item) pair: a later duplicate review must be dropped
            rows.append(_review("A1USERA", asin, 1_500_000_000))
            rows.append(dict(rows[-1]))  # exact duplicate line
        if asin in CORE_ITEMS[1:4]:
            rows.append(_review(SHORT_USER, asin, 1_300_000_000 + k))
        if asin in CORE_ITEMS[:4]:
            rows.append(_review(CASCADE_USER, asin, 1_350_000_000 + k))
    rows.append(_review("A1USERA", SPARSE_ITEM, 1_410_000_000))
    rows.append(_review("A2USERB", SPARSE_ITEM, 1_410_000_000))
    rows.append(_review(CASCADE_USER, CASCADE_ITEM, 1_360_000_000))
    return rows


LONG_DESC = "x" * 2500


def _raw_meta() -> list[dict]:
    base = {"category": ["Office Products", "Office & School Supplies"], "main_cat": "Office Products"}
    metas = [
        {
            **base,
            "asin": CORE_ITEMS[0],
            "title": 'HP 12C &amp; "Financial" <b>Calculator</b>...',
            "description": ["Classic <br/>calculator.", "", 'RPN "entry"\nmode'],
            "brand": "by\n    HP ",
        },
        {**base, "asin": CORE_ITEMS[1], "title": "Stapler", "description": [], "brand": "Swingline"},
        {**base, "asin": CORE_ITEMS[2], "title": "Pens", "description": [LONG_DESC], "brand": ""},
        {**base, "asin": CORE_ITEMS[3], "title": "Paper", "description": "Plain string description"},
        {**base, "asin": CORE_ITEMS[4], "title": "Tape", "description": ["Sticky."], "brand": "3M"},
        {**base, "asin": SPARSE_ITEM, "title": "Rare", "description": ["r"], "brand": "R"},
        {**base, "asin": CASCADE_ITEM, "title": "Cascade", "description": ["c"], "brand": "C"},
        {**base, "asin": "B00000NOREV", "title": "No reviews", "description": ["n"], "brand": "N"},
    ]
    return metas


def _write_jsonl_gz(path: Path, rows: list[dict], extra_lines: tuple[str, ...] = ()) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
        for line in extra_lines:
            fh.write(line + "\n")
    return path


@pytest.fixture
def raw_files(tmp_path: Path) -> tuple[Path, Path]:
    raw = tmp_path / "raw_src"
    raw.mkdir()
    reviews = _write_jsonl_gz(raw / f"{CAT}_5.json.gz", _raw_reviews(), extra_lines=("{not json",))
    meta = _write_jsonl_gz(raw / f"meta_{CAT}.json.gz", _raw_meta())
    return reviews, meta


def _load_out(d: Path, cat: str = CAT) -> tuple[dict, dict, dict, dict]:
    return tuple(json.loads(p.read_text()) for p in dl.amazon18_outputs(d, cat))  # type: ignore[return-value]


def check_lcrec_shape(d: Path, cat: str) -> None:
    """Format/shape conventions of the LC-Rec/TIGER files (shared by our output and the dev copy)."""
    inter_p, item_p, item_idx_p, user_idx_p = dl.amazon18_outputs(d, cat)
    inter, items, item_index, user_index = (
        json.loads(p.read_text()) for p in (inter_p, item_p, item_idx_p, user_idx_p)
    )
    for p in (inter_p, item_p, item_idx_p, user_idx_p):
        head = p.read_text()[:40].splitlines()
        assert head[0] == "{" and head[1].startswith('    "'), f"{p.name}: not indent=4 JSON"

    assert isinstance(inter, dict) and inter
    assert all(isinstance(k, str) and k.isdigit() for k in inter)
    assert sorted(int(k) for k in inter) == list(range(len(inter)))
    assert all(isinstance(v, list) and v and all(type(i) is int for i in v) for v in inter.values())

    assert isinstance(items, dict) and items
    assert all(isinstance(k, str) and k.isdigit() for k in items)
    assert all(set(v) == {"title", "description", "brand"} for v in items.values())
    assert all(isinstance(x, str) for v in items.values() for x in v.values())

    assert all(isinstance(k, str) and type(v) is int for k, v in item_index.items())
    assert all(isinstance(k, str) and type(v) is int for k, v in user_index.items())
    assert sorted(item_index.values()) == list(range(len(item_index)))
    assert sorted(user_index.values()) == list(range(len(user_index)))
    assert {str(v) for v in item_index.values()} == set(items)
    assert {str(v) for v in user_index.values()} == set(inter)
    assert {i for seq in inter.values() for i in seq} == set(item_index.values())


# ---------------------------------------------------------------------------------------------
# (a) preprocessing
# ---------------------------------------------------------------------------------------------


def test_preprocess_filters_orders_and_indexes(raw_files, tmp_path):
    reviews, meta = raw_files
    out = tmp_path / "out"
    stats = dl.preprocess_amazon18(reviews, meta, out, CAT, quiet=True)
    inter, items, item_index, user_index = _load_out(out)

    # k-core + metadata filter: exactly the core block survives (cascade user removed too)
    assert set(user_index) == set(CORE_USERS)
    assert set(item_index) == set(CORE_ITEMS)
    assert stats == {
        "raw_interactions": len(_raw_reviews()),
        "bad_lines": 1,
        "after_dedup": len(_raw_reviews()) - 2,
        "after_meta_filter": len(_raw_reviews()) - 2 - 5,
        "interactions": 30,
        "users": 6,
        "items": 5,
    }
    counts = collections.Counter(i for seq in inter.values() for i in seq)
    assert all(len(seq) >= 5 for seq in inter.values())
    assert all(c >= 5 for c in counts.values())
    assert all(len(seq) == len(set(seq)) for seq in inter.values())  # dedup

    # index order: first appearance in the raw file (items: ASIN order, as McAuley sorts them)
    assert item_index == {a: k for k, a in enumerate(sorted(CORE_ITEMS))}
    first_seen = list(dict.fromkeys(r["reviewerID"] for r in _raw_reviews() if r["reviewerID"] in CORE_USERS))
    assert user_index == {u: k for k, u in enumerate(first_seen)}

    # chronological: each user's items sorted by the earliest unixReviewTime of that pair
    earliest: dict[tuple[str, str], int] = {}
    for r in _raw_reviews():
        key = (r["reviewerID"], r["asin"])
        earliest[key] = min(earliest.get(key, r["unixReviewTime"]), r["unixReviewTime"])
    for u, uid in user_index.items():
        want = sorted(CORE_ITEMS, key=lambda a: earliest[(u, a)])
        assert inter[str(uid)] == [item_index[a] for a in want]
        times = [earliest[(u, a)] for a in want]
        assert times == sorted(times)
    # the later duplicate of (A1USERA, item 1) did not move that item to the end
    assert earliest[("A1USERA", CORE_ITEMS[0])] < 1_500_000_000

    # text cleaning (LC-Rec rules)
    by_asin = {a: items[str(i)] for a, i in item_index.items()}
    assert by_asin[CORE_ITEMS[0]] == {
        "title": "HP 12C & Financial Calculator.",
        "description": "Classic calculator. RPN entrymode.",
        "brand": "HP",
    }
    assert by_asin[CORE_ITEMS[1]]["description"] == ""  # empty list stays empty
    assert by_asin[CORE_ITEMS[2]]["description"] == ""  # >= 2000 chars dropped
    assert by_asin[CORE_ITEMS[3]] == {
        "title": "Paper.",
        "description": "Plain string description.",
        "brand": "",
    }
    assert by_asin[CORE_ITEMS[4]]["description"] == "Sticky."

    check_lcrec_shape(out, CAT)
    assert not list(out.glob(".*.part")), "temp files left behind"


def test_preprocess_is_deterministic_and_ratings_csv_matches(raw_files, tmp_path):
    reviews, meta = raw_files
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    dl.preprocess_amazon18(reviews, meta, a, CAT, quiet=True)
    dl.preprocess_amazon18(reviews, meta, b, CAT, quiet=True)
    for pa, pb in zip(dl.amazon18_outputs(a, CAT), dl.amazon18_outputs(b, CAT), strict=True):
        assert pa.read_bytes() == pb.read_bytes()

    # LC-Rec's own source: the ratings-only CSV (item,user,rating,timestamp; no header)
    csv = tmp_path / f"{CAT}.csv"
    csv.write_text(
        "".join(
            f"{r['asin']},{r['reviewerID']},{r['overall']},{r['unixReviewTime']}\n" for r in _raw_reviews()
        )
    )
    dl.preprocess_amazon18(csv, meta, c, CAT, quiet=True)
    for pa, pc in zip(dl.amazon18_outputs(a, CAT), dl.amazon18_outputs(c, CAT), strict=True):
        assert json.loads(pa.read_text()) == json.loads(pc.read_text())


def test_k_core_cascades():
    # u3 has 2 items -> removed; then item i2 drops to 1 -> removed (k=2)
    inters = [
        (0, "u1", "i1"),
        (1, "u2", "i1"),
        (2, "u1", "i3"),
        (3, "u2", "i3"),
        (4, "u3", "i2"),
        (5, "u3", "i4"),
    ]
    inters += [(6, "u4", "i2")]
    out = dl.k_core(inters, 2, 2)
    assert {r[1] for r in out} == {"u1", "u2"} and {r[2] for r in out} == {"i1", "i3"}


def test_clean_text_rules():
    assert dl.clean_text(None) == ""
    assert dl.clean_text([]) == ""
    assert dl.clean_text("...") == ""
    assert dl.clean_text("Ends with dots...") == "Ends with dots."
    assert dl.clean_text(["a", "<p>b</p>", "c&quot;"]) == "a b c."
    assert dl.clean_text("x" * 1998) == "x" * 1998 + "."
    assert dl.clean_text("x" * 1999) == ""


def test_corrupt_raw_file_is_a_one_line_error(raw_files, tmp_path):
    reviews, meta = raw_files
    bad = tmp_path / "bad_5.json.gz"
    bad.write_bytes(reviews.read_bytes()[:60])  # truncated gzip
    with pytest.raises(DownloadError) as ei:
        dl.preprocess_amazon18(bad, meta, tmp_path / "o", CAT, quiet=True)
    assert "\n" not in str(ei.value) and "--force" in str(ei.value)
    assert not (tmp_path / "o" / f"{CAT}.inter.json").exists()


def test_cli_local_files_skip_and_force(raw_files, tmp_path, capsys):
    reviews, meta = raw_files
    out = tmp_path / "cli"
    argv = [
        "amazon18",
        "--category",
        "Office",
        "--out",
        str(out),
        "--reviews",
        str(reviews),
        "--meta",
        str(meta),
    ]
    assert dl.main([*argv, "--quiet"]) == 0
    inter_p = out / f"{CAT}.inter.json"  # LC-Rec short name resolved to the file name
    mtime = inter_p.stat().st_mtime_ns
    time.sleep(0.01)
    assert dl.main(argv) == 0
    assert "already prepared" in capsys.readouterr().err
    assert inter_p.stat().st_mtime_ns == mtime
    assert dl.main([*argv, "--force", "--quiet"]) == 0
    assert inter_p.stat().st_mtime_ns != mtime


# ---------------------------------------------------------------------------------------------
# (b) same conventions as the shipped dev copy
# ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(not SHARED_OFFICE.is_dir(), reason=f"{SHARED_OFFICE} not present")
def test_output_matches_shared_amazon18_office_conventions(raw_files, tmp_path):
    check_lcrec_shape(SHARED_OFFICE, CAT)  # the convention holds for the dev copy ...
    reviews, meta = raw_files
    out = tmp_path / "out"
    dl.preprocess_amazon18(reviews, meta, out, CAT, quiet=True)
    check_lcrec_shape(out, CAT)  # ... and for our output
    assert sorted(p.name for p in out.glob("*.json")) == sorted(p.name for p in SHARED_OFFICE.glob("*.json"))

    ref_inter, ref_items, ref_iidx, _ = _load_out(SHARED_OFFICE)
    inter, items, iidx, _ = _load_out(out)
    # conventions the dev copy shows: items numbered in ASIN order, users in order of first item
    assert list(ref_iidx) == sorted(ref_iidx) and list(iidx) == sorted(iidx)
    for seqs in (ref_inter, inter):
        firsts = [min(seqs[k]) for k in sorted(seqs, key=int)]
        assert firsts == sorted(firsts)
    assert min(len(s) for s in ref_inter.values()) >= 5 and min(len(s) for s in inter.values()) >= 5


def test_output_loads_with_the_lcrec_loader(raw_files, tmp_path):
    try:
        from rucai.data.amazon import load_lcrec
    except ImportError as e:  # the loader lives in a module others edit; skip if it is mid-change
        pytest.skip(f"rucai.data.amazon not importable: {e}")
    reviews, meta = raw_files
    out = tmp_path / "out"
    dl.preprocess_amazon18(reviews, meta, out, CAT, quiet=True)
    data = load_lcrec(out, CAT)
    assert len(data.sequences) == 6
    assert all(len(s) == 5 for s in data.sequences)


# ---------------------------------------------------------------------------------------------
# (c) offline: fast one-line failure, no partial files
# ---------------------------------------------------------------------------------------------


def _files_under(d: Path) -> list[Path]:
    """Everything left under `d` (files and folders): a failed download must leave nothing."""
    return sorted(d.rglob("*")) if d.exists() else []


def test_fetch_unreachable_is_fast_one_line_and_clean(tmp_path):
    url = f"{CLOSED}/{CAT}_5.json.gz"
    t0 = time.monotonic()
    with pytest.raises(DownloadError) as ei:
        dl.fetch(url, tmp_path / "dl" / f"{CAT}_5.json.gz", quiet=True)
    assert time.monotonic() - t0 < 5
    msg = str(ei.value)
    assert isinstance(ei.value, RuntimeError)
    assert "\n" not in msg and url in msg and "data.dir=" in msg and "no network?" in msg
    assert _files_under(tmp_path) == []


def test_download_amazon18_offline(tmp_path):
    out = tmp_path / "amazon18"
    with pytest.raises(DownloadError) as ei:
        dl.download_amazon18(CAT, out, base_urls=[CLOSED], quiet=True)
    assert "\n" not in str(ei.value) and f"{CLOSED}/categoryFilesSmall/{CAT}_5.json.gz" in str(ei.value)
    assert _files_under(tmp_path) == []


def test_download_amazon23_offline_and_urls(tmp_path):
    urls = dl.amazon23_urls("Video_Games")
    assert set(urls) == {f"Video_Games.{s}.csv.gz" for s in ("train", "valid", "test")} | {"meta_Video_Games.jsonl.gz"}
    assert urls["Video_Games.test.csv.gz"][0].endswith("/amazon_2023/benchmark/5core/last_out_w_his/Video_Games.test.csv.gz")
    assert urls["meta_Video_Games.jsonl.gz"][0].endswith("/amazon_2023/raw/meta_categories/meta_Video_Games.jsonl.gz")
    with pytest.raises(DownloadError) as ei:
        dl.download_amazon23("games", tmp_path / "a23", base_urls=[CLOSED], quiet=True)
    assert "\n" not in str(ei.value) and "Video_Games.train.csv.gz" in str(ei.value)
    assert _files_under(tmp_path) == []


def test_download_recbole_offline(tmp_path):
    with pytest.raises(DownloadError) as ei:
        dl.download_recbole("ml-100k", tmp_path, url=f"{CLOSED}/ml-100k.zip", quiet=True)
    assert "\n" not in str(ei.value) and f"{CLOSED}/ml-100k.zip" in str(ei.value)
    assert _files_under(tmp_path) == []


@pytest.mark.parametrize(
    "args",
    [
        ["recbole", "--name", "ml-100k", "--url", f"{CLOSED}/ml-100k.zip"],
        ["amazon18", "--category", CAT, "--base-url", CLOSED],
        ["amazon23", "--category", "instruments", "--base-url", CLOSED],
        ["still", "--url", f"{CLOSED}/long_form_thought_data_5k.jsonl"],
    ],
    ids=["recbole", "amazon18", "amazon23", "still"],
)
def test_cli_offline_exit_2_one_line(tmp_path, args):
    out = tmp_path / "data"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "rucai.data.download", *args, "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert time.monotonic() - t0 < 30
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach http://127.0.0.1:9/"), proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert _files_under(tmp_path) == []


def test_dns_failure_stops_without_trying_mirrors(tmp_path, monkeypatch):
    calls: list[str] = []

    def fake_urlopen(req, timeout):
        calls.append(req.full_url)
        raise urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(dl.urllib.request, "urlopen", fake_urlopen)
    with pytest.raises(DownloadError) as ei:
        dl.fetch(["https://a.example/x", "https://b.example/x"], tmp_path / "x", quiet=True)
    assert calls == ["https://a.example/x"]
    assert "DNS lookup failed" in str(ei.value) and "no network?" in str(ei.value)
    assert _files_under(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# downloads that work, against a local HTTP server
# ---------------------------------------------------------------------------------------------


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        if self.path.endswith("/truncated.json.gz"):
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"only a few bytes")
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Handler, directory=str(root))
    )
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_download_amazon18_end_to_end_with_mirror_fallback(server, raw_files, tmp_path):
    root, base = server
    reviews, meta = raw_files
    (root / "m2" / "categoryFilesSmall").mkdir(parents=True)
    (root / "m2" / "metaFiles2").mkdir(parents=True)
    (root / "m2" / "categoryFilesSmall" / reviews.name).write_bytes(reviews.read_bytes())
    (root / "m2" / "metaFiles2" / meta.name).write_bytes(meta.read_bytes())
    out = tmp_path / "amazon18"
    # first mirror answers 404 -> second mirror serves the files
    got = dl.download_amazon18(CAT, out, base_urls=[f"{base}/m1", f"{base}/m2"], quiet=True)
    assert got == out
    check_lcrec_shape(out, CAT)
    assert (out / "raw" / reviews.name).read_bytes() == reviews.read_bytes()
    assert not list(out.rglob(".*.part"))
    ref = tmp_path / "ref"
    dl.preprocess_amazon18(reviews, meta, ref, CAT, quiet=True)
    for a, b in zip(dl.amazon18_outputs(out, CAT), dl.amazon18_outputs(ref, CAT), strict=True):
        assert a.read_bytes() == b.read_bytes()

    # present outputs are reused: a dead mirror is never contacted
    assert dl.download_amazon18(CAT, out, base_urls=[CLOSED], quiet=True) == out
    # keep_raw=False removes the downloads after a forced rebuild
    dl.download_amazon18(CAT, out, base_urls=[f"{base}/m2"], force=True, keep_raw=False, quiet=True)
    assert not (out / "raw").exists()


def test_http_404_everywhere_says_the_file_moved(server, tmp_path):
    _root, base = server
    with pytest.raises(DownloadError) as ei:
        dl.fetch([f"{base}/a/x.gz", f"{base}/b/x.gz"], tmp_path / "x.gz", quiet=True)
    msg = str(ei.value)
    assert msg.startswith(f"cannot download {base}/a/x.gz (HTTP 404") and "1 mirror(s)" in msg
    assert "\n" not in msg
    assert not (tmp_path / "x.gz").exists()


def test_truncated_download_leaves_nothing(server, tmp_path):
    _root, base = server
    with pytest.raises(DownloadError) as ei:
        dl.fetch(f"{base}/truncated.json.gz", tmp_path / "t" / "truncated.json.gz", quiet=True)
    assert "connection dropped" in str(ei.value) and "\n" not in str(ei.value)
    assert _files_under(tmp_path / "t") == []


def test_download_recbole_unzips_atomic_files(server, tmp_path):
    root, base = server
    with zipfile.ZipFile(root / "ml-100k.zip", "w") as zf:
        zf.writestr(
            "ml-100k/ml-100k.inter",
            "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t2\t3\t4\n",
        )
        zf.writestr("ml-100k/ml-100k.item", "item_id:token\tmovie_title:token_seq\n2\tToy Story\n")
        zf.writestr("ml-100k/ml-100k.user", "user_id:token\tage:token\n1\t24\n")
        zf.writestr("ml-100k/README", "ignored")
        zf.writestr("__MACOSX/ml-100k/._ml-100k.inter", "junk")
    out = tmp_path / "data"
    target = dl.download_recbole("ml-100k", out, url=f"{base}/ml-100k.zip", quiet=True)
    assert target == out / "ml-100k"
    assert sorted(p.name for p in target.iterdir()) == ["ml-100k.inter", "ml-100k.item", "ml-100k.user"]
    assert (target / "ml-100k.inter").read_text().startswith("user_id:token\titem_id:token")
    assert not (out / "ml-100k.zip").exists()  # zip removed by default
    # second call is a no-op even with the server gone
    assert dl.download_recbole("ml-100k", out, url=f"{CLOSED}/ml-100k.zip", quiet=True) == target


def test_download_recbole_renames_to_dataset_name_and_rejects_bad_zip(server, tmp_path):
    root, base = server
    with zipfile.ZipFile(root / "Amazon_Beauty.zip", "w") as zf:
        zf.writestr("Amazon_Beauty/Amazon_Beauty.inter", "user_id:token\titem_id:token\n")
    t = dl.download_recbole("amazon-beauty", tmp_path / "d", url=f"{base}/Amazon_Beauty.zip", quiet=True)
    assert (t / "amazon-beauty.inter").is_file()

    (root / "bad.zip").write_bytes(b"this is not a zip")
    with pytest.raises(DownloadError) as ei:
        dl.download_recbole("bad", tmp_path / "e", url=f"{base}/bad.zip", quiet=True)
    assert "not a valid zip" in str(ei.value)
    assert _files_under(tmp_path / "e") == []


def test_unknown_recbole_name_lists_known(tmp_path):
    with pytest.raises(DownloadError) as ei:
        dl.download_recbole("no-such-set", tmp_path, quiet=True)
    assert "ml-100k" in str(ei.value) and "--url" in str(ei.value)


def test_category_names():
    assert dl.resolve_category("Office") == "Office_Products"
    assert dl.resolve_category("office_products") == "Office_Products"
    assert dl.resolve_category("Beauty") == "All_Beauty"
    base = "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_v2"
    reviews, meta, _, _ = dl.amazon18_urls("Office_Products")
    assert reviews[0] == f"{base}/categoryFilesSmall/Office_Products_5.json.gz"
    assert meta[0] == f"{base}/metaFiles2/meta_Office_Products.json.gz"
    with pytest.raises(DownloadError):
        dl.resolve_category("../etc")


def test_module_top_imports_are_stdlib_only():
    code = (
        "import sys; import rucai.data.download; "
        "heavy = ('torch', 'lightning', 'pandas', 'numpy', 'hydra', 'omegaconf'); "
        "bad = sorted(m for m in heavy if m in sys.modules); "
        "print(','.join(bad))"
    )
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""
