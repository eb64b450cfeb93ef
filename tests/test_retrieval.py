"""Retrieval: corpus readers, BM25 and dense indexes, the HTTP service (batched, 127.0.0.1), the CLI."""

import json
import subprocess
import sys

import pytest

from rucai.errors import UserError
from rucai.retrieval import Passage, format_documents, load_retriever
from rucai.retrieval.corpus import read_passages, split_words
from rucai.retrieval.index import build_index, ensure_index
from rucai.retrieval.service import BackgroundServer, HTTPRetriever
from tests.conftest import DATA_DIR, ROOT, needs_data

CORPUS = [
    {"id": "a", "title": "Shirley Temple", "text": "Shirley Temple was an American actress and diplomat, Chief of Protocol."},
    {"id": "b", "title": "Kiss and Tell", "text": "Kiss and Tell is a 1945 comedy film starring Shirley Temple as Corliss Archer."},
    {"id": "c", "title": "Kauffman Stadium", "text": "Kauffman Stadium is a baseball park in the Truman Sports Complex."},
    {"id": "d", "title": "Paris", "text": "Paris is the capital and most populous city of France."},
]


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    src = tmp_path_factory.mktemp("corpus") / "c.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in CORPUS))
    out = tmp_path_factory.mktemp("index")
    build_index(read_passages("jsonl", src), out, kinds=["bm25"])
    return out


def test_split_words_and_format_documents():
    assert split_words(" ".join(map(str, range(250))), 100)[2] == " ".join(map(str, range(200, 250)))
    docs = format_documents([Passage("1", "T1", "x y"), Passage("2", "", "z")])
    assert docs == "(1)T1\nx y\n(2)z\n"
    assert format_documents([]) == "None\n"


def test_bm25_ranks_the_matching_passage_first(index_dir):
    r = load_retriever(index_dir)
    res = r.search(["Truman Sports Complex baseball park", "capital of France", ""], k=2)
    assert res[0][0].title == "Kauffman Stadium"
    assert res[1][0].id == "d"
    assert res[2] == []  # an empty query finds nothing instead of failing the batch
    assert res[0][0].score >= (res[0][1].score if len(res[0]) > 1 else 0)
    # batched == one by one
    single = [r.search([q], k=2)[0] for q in ["Truman Sports Complex baseball park", "capital of France"]]
    assert [[p.id for p in x] for x in single] == [[p.id for p in x] for x in res[:2]]


def test_http_service_matches_in_process(index_dir):
    local = load_retriever(index_dir)
    with BackgroundServer(local) as url:
        assert url.startswith("http://127.0.0.1:")
        client = load_retriever(url)
        assert isinstance(client, HTTPRetriever)
        qs = ["Shirley Temple actress", "Corliss Archer film", "France"]
        assert [[p.id for p in x] for x in client.search(qs, k=3)] == [[p.id for p in x] for x in local.search(qs, 3)]
        assert client.health()["num_passages"] == 4
        # the authors' /queries protocol
        ans = client._post("/queries", {"queries": ["France"], "k": 1})["answers"]
        assert ans == [["Paris\nParis is the capital and most populous city of France."]]
        with pytest.raises(UserError, match="400"):
            client._post("/search", {"queries": "x", "k": 0})


def test_missing_index_is_one_line_error(tmp_path):
    with pytest.raises(UserError, match="python -m rucai.retrieval build"):
        load_retriever(tmp_path)
    with pytest.raises(UserError, match="unreachable"):
        HTTPRetriever("http://127.0.0.1:9", timeout=2).search(["x"])


def test_backends_register_themselves_and_base_imports_none(tmp_path, monkeypatch):
    from rucai.retrieval import base
    from rucai.retrieval.index import BM25Index, DenseIndex
    from tests.test_imports import imports

    # the package imports its backends, so they are registered; base imports none of them
    assert base.index_class("bm25") is BM25Index and base.index_class("dense") is DenseIndex
    assert isinstance(load_retriever("http://127.0.0.1:9"), HTTPRetriever)
    assert not [e for e in imports() if e.src == "rucai.retrieval.base" and e.dst.startswith("rucai.retrieval")]

    # a new backend: a decorator, no edit to the loader
    monkeypatch.setattr(base, "_INDEXES", dict(base._INDEXES))
    monkeypatch.setattr(base, "_URL_CLIENTS", dict(base._URL_CLIENTS))

    @base.register_retriever("echo", url_schemes=("echo://",))
    class Echo(base.Retriever):
        def __init__(self, url, **kw):
            self.url = url

        def search(self, queries, k=3):
            return [[Passage(self.url, "", q)] for q in queries]

    @base.register_retriever("fake")
    class FakeIndex(base.Retriever):
        @classmethod
        def load(cls, folder, **kw):
            return cls()

        def search(self, queries, k=3):
            return [[] for _ in queries]

    r = load_retriever("echo://x")
    assert isinstance(r, Echo) and r.kind == "echo" and r.search_one("hi")[0].text == "hi"
    (tmp_path / "index.json").write_text(json.dumps({"kinds": ["fake", "gone"]}))
    assert isinstance(load_retriever(tmp_path), FakeIndex)
    with pytest.raises(UserError, match="unknown index kind 'gone'; valid: bm25, dense, fake"):
        load_retriever(tmp_path, kind="gone")


def test_dense_index_finds_paraphrase(tmp_path):
    passages = [Passage(r["id"], r["title"], r["text"]) for r in CORPUS]
    build_index(passages, tmp_path, kinds=["bm25", "dense"])
    r = load_retriever(tmp_path, kind="dense")
    hits = r.search(["Which city is France's capital?", "ballpark in the sports complex"], k=1)
    assert hits[0][0].id == "d" and hits[1][0].id == "c"
    assert 0 < hits[0][0].score <= 1.0001  # cosine similarity


def test_cli_build_and_search(tmp_path):
    src = tmp_path / "c.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in CORPUS))
    out = tmp_path / "idx"
    cmd = [sys.executable, "-m", "rucai.retrieval"]
    b = subprocess.run(cmd + ["build", "--source", "jsonl", "--input", str(src), "--out", str(out)],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert b.returncode == 0, b.stderr
    s = subprocess.run(cmd + ["search", "--index", str(out), "Corliss Archer", "-k", "1"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert s.returncode == 0 and "Kiss and Tell" in s.stdout
    bad = subprocess.run(cmd + ["search", "--index", str(tmp_path / "none"), "x"], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: no retrieval index")


@needs_data("multihop_qa", "hotpotqa_dev500_with_contexts.jsonl")
def test_hotpotqa_pool_supports_its_questions(tmp_path):
    src = DATA_DIR / "multihop_qa" / "hotpotqa_dev500_with_contexts.jsonl"
    folder = ensure_index(tmp_path / "hp", "hotpotqa_contexts", src)
    r = load_retriever(folder)
    assert 4000 < len(r.passages) < 5000  # ~10 paragraphs per question, deduplicated
    rows = [json.loads(x) for x in src.read_text().splitlines()[:20]]
    hit = 0
    for row in rows:
        sup = {c["title"] for c in row["contexts"] if c["is_supporting"]}
        hit += bool(sup & {p.title for p in r.search([row["question_text"]], k=5)[0]})
    assert hit >= 16  # BM25 with the question finds a supporting paragraph in the top 5 for most questions
    # reuse: a second call does not rebuild
    mtime = (folder / "index.json").stat().st_mtime
    ensure_index(tmp_path / "hp", "hotpotqa_contexts", src)
    assert (folder / "index.json").stat().st_mtime == mtime


# ---- the R1-Searcher authors' retriever: BGE encoder settings, their corpora ---------------------------

def _tiny_bert(folder):
    """A random 1-layer BERT and a word-piece tokenizer over a small vocabulary, saved as a model folder."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "represent", "this", "sentence", "for", "searching",
             "relevant", "passages", ":", "?", ".", ",", "who", "built", "the", "stadium", "kauffman", "paris", "is",
             "capital", "of", "france", "shirley", "temple", "actress", "film", "baseball", "park", "a", "in"]
    folder.mkdir(parents=True)
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    tok = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=128, initializer_range=0.5)
    BertModel(cfg).eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_bge_encoder_is_cls_pooled_normalised_and_prefixes_queries(tmp_path):
    """`encoder=<folder named bge-large-en-v1.5>` builds and searches a dense index with the authors'
    settings (FlagModel: CLS vector, L2-normalised; queries prefixed with the BGE instruction, passages
    not): the stored and query vectors equal the ones computed by hand from the same model."""
    import numpy as np
    import torch
    from transformers import BertModel, BertTokenizerFast

    from rucai.retrieval.encoders import BGE_QUERY_INSTRUCTION

    folder = _tiny_bert(tmp_path / "bge-large-en-v1.5")
    passages = [Passage(r["id"], r["title"], r["text"]) for r in CORPUS]
    out = build_index(passages, tmp_path / "idx", kinds=["dense"], encoder=str(folder))
    r = load_retriever(out, kind="dense")
    assert (r.spec.pooling, r.spec.normalize, r.spec.query_prefix, r.spec.passage_max_length) == \
        ("cls", True, "Represent this sentence for searching relevant passages:", 300)
    model, tok = BertModel.from_pretrained(folder).eval(), BertTokenizerFast.from_pretrained(folder)

    def by_hand(text):
        with torch.no_grad():
            cls = model(**tok([text], return_tensors="pt")).last_hidden_state[0, 0]
        return (cls / cls.norm()).numpy()

    stored = r.index.reconstruct_n(0, len(passages))
    for i, p in enumerate(passages):
        np.testing.assert_allclose(stored[i], by_hand(p.contents), atol=1e-5)
    q = "Who built the stadium?"
    qv = r.encoder.encode_queries([q])[0]
    np.testing.assert_allclose(qv, by_hand(BGE_QUERY_INSTRUCTION + q), atol=1e-5)
    assert np.abs(qv - by_hand(q)).max() > 1e-2  # the instruction changed the query vector
    scores = stored @ by_hand(BGE_QUERY_INSTRUCTION + q)
    hits = r.search([q], k=2)[0]
    assert [h.id for h in hits] == [passages[i].id for i in np.argsort(-scores)[:2]]
    assert hits[0].score == pytest.approx(float(scores.max()), abs=1e-5)


def test_kilt_download_writes_the_authors_split(tmp_path, monkeypatch):
    """`download --corpus kilt` on a raw file already in place (no network touched) writes the authors'
    `split_kilt_to_100.py` TSV: their own sample output for the same pages, line for line."""
    import shutil
    import urllib.request

    from rucai.retrieval.download import download_corpus

    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("network touched"))
    sample = ROOT / "tests" / "data" / "r1searcher_kilt_sample"
    (tmp_path / "wiki").mkdir()
    shutil.copy(sample / "filtered_kilt_sample_head.jsonl", tmp_path / "wiki" / "kilt_knowledgesource.json")
    tsv = download_corpus("kilt", tmp_path / "wiki", quiet=True)
    want = (sample / "train_kilt_full_page_sample_head.tsv").read_text(encoding="utf-8").splitlines()
    assert tsv.read_text(encoding="utf-8").splitlines() == want
    ps = read_passages("r1searcher_tsv", tsv)  # what the index embeds: their `line.split("\t")[1]`
    assert [p.contents for p in ps] == [ln.split("\t")[1] for ln in want] and ps[0].id == "0"


def test_download_offline_is_one_line_naming_the_url_and_the_fix(tmp_path, monkeypatch, capsys):
    import socket
    import urllib.error
    import urllib.request

    from rucai.retrieval.__main__ import main
    from rucai.retrieval.download import CORPORA, download_corpus

    def offline(*a, **k):
        raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    url = CORPORA["hotpotqa_abstracts"].url
    with pytest.raises(UserError) as e:
        download_corpus("hotpotqa_abstracts", tmp_path / "wiki", quiet=True)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"cannot reach {url}")
    assert f"fetch {url} on a machine with internet into {tmp_path / 'wiki' / CORPORA['hotpotqa_abstracts'].raw}" in msg
    assert not (tmp_path / "wiki" / "hotpotqa_abstracts.tsv").exists()
    assert main(["download", "--corpus", "kilt", "--out", str(tmp_path / "k")]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and CORPORA["kilt"].url in err[0]
