"""CoCoRec item inputs: view texts, PQ / per-view RQ token ids, cached ItemFeatures, 2023 brand."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from rucai.cocorec import codes as C
from rucai.errors import UserError
from rucai.rec import embeddings as E

faiss = pytest.importorskip("faiss")


def test_clean_text_hand_case():
    raw = ["Fine &amp; <b>bold</b>\n pens", ["nested", "  list "], None, "a&lt;b"]
    assert C.clean_text(raw) == "Fine & bold pens nested list a<b"
    assert C.clean_text("line<br/>break &quot;x&quot;") == "line break \"x\""
    assert C.clean_text(None) == "" and C.clean_text([]) == "" and C.clean_text(3) == "3"
    item_text = {2: {"title": "B", "brand": "Acme"}, 1: {"title": ["A", "1"]}}
    assert C.view_texts(item_text, "title", 3) == ["A 1", "B", ""]
    assert C.view_texts(item_text, "brand", 3) == ["", "Acme", ""]


def _views(n=400, v=3, d=16, seed=0):
    return np.random.RandomState(seed).randn(v, n, d).astype(np.float32)


@pytest.mark.parametrize("method", ["pq", "rq"])
def test_token_ids_deterministic_one_based_and_per_level(method):
    x = _views()
    a = C.quantize(x, method, codes_per_view=4, bits=4, seed=3)
    b = C.quantize(x, method, codes_per_view=4, bits=4, seed=3)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (401, 12) and a.dtype == np.int64
    assert not a[0].any()
    k = 16
    level = np.arange(12)
    assert ((a[1:] >= level * k + 1) & (a[1:] <= (level + 1) * k)).all()
    assert all(len(np.unique(a[1:, c])) > 1 for c in range(12))  # every level used


def test_unpack_matches_faiss_bitstring_reader():
    rng = np.random.RandomState(0)
    m, bits = 7, 5
    packed = rng.randint(0, 256, size=(3, (m * bits + 7) // 8)).astype(np.uint8)
    got = C.unpack_codes(packed, m, bits)
    for row, g in zip(packed, got, strict=True):
        r = faiss.BitstringReader(faiss.swig_ptr(row), len(row))
        assert [r.read(bits) for _ in range(m)] == g.tolist()


def test_pq_code_of_a_centroid_copy_is_that_centroid():
    x = _views(v=2, d=8).transpose(1, 0, 2).reshape(400, 16)
    index = C.train_pq(x, m=4, bits=4, seed=0)
    cents = faiss.vector_to_array(index.pq.centroids).reshape(4, 16, 4)  # [m, K, dsub]
    want = np.array([[3, 0, 15, 7], [9, 9, 1, 12]])
    y = np.stack([np.concatenate([cents[j, c] for j, c in enumerate(w)]) for w in want]).astype(np.float32)
    np.testing.assert_array_equal(C.unpack_codes(index.pq.compute_codes(y), 4, 4), want)
    tok = C.to_tokens(want, 4)
    np.testing.assert_array_equal(tok, [[0, 0, 0, 0], [4, 17, 48, 56], [10, 26, 34, 61]])


def test_rq_each_view_owns_its_columns():
    x = _views(v=3)
    a = C.quantize(x, "rq", codes_per_view=4, bits=4, seed=0)
    x2 = x.copy()
    x2[2] = np.random.RandomState(9).randn(*x[2].shape)
    b = C.quantize(x2, "rq", codes_per_view=4, bits=4, seed=0)
    assert a.shape[1] == 12
    np.testing.assert_array_equal(a[:, :8], b[:, :8])  # views 0 and 1 untouched
    assert (a[1:, 8:] != b[1:, 8:]).any()


def test_too_few_items_for_the_codebook_is_a_user_error():
    with pytest.raises(UserError, match="lower item_features.bits"):
        C.quantize(_views(n=100), "pq", codes_per_view=4, bits=8)


class StubEncoder:
    calls = 0

    def encode(self, texts, **kw):
        StubEncoder.calls += 1
        out = []
        for t in texts:  # a fixed pseudo-random vector per text
            seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:4], "little")
            out.append(np.random.RandomState(seed).randn(24))
        return np.asarray(out, dtype=np.float32)


def _data(n=300):
    from rucai.data.sequential import SequenceData

    item_text = {i: {"title": f"item {i}", "brand": f"brand {i % 37}", "description": f"about {i % 101}"}
                 for i in range(1, n + 1)}
    del item_text[5]["brand"]  # a missing view -> "" is still encoded
    return SequenceData(name="tiny", sequences=[[1, 2, 3]], num_items=n, item_text=item_text)


def test_item_features_shapes_and_cache(tmp_path, monkeypatch):
    StubEncoder.calls = 0
    monkeypatch.setattr(E, "load_encoder", lambda name, device=None: StubEncoder())
    feats = C.ItemFeatures(views=["title", "brand", "description"], encoder="stub", code_pca_dim=16,
                           text_dim=8, codes_per_view=4, bits=4, cache_dir=str(tmp_path))
    out = feats.model_kwargs(_data())
    codes, tv = out["item_codes"], out["text_vectors"]
    assert tuple(codes.shape) == (301, 12) and str(codes.dtype) == "torch.int64"
    assert tuple(tv.shape) == (3, 301, 8) and str(tv.dtype) == "torch.float32"
    assert out["num_codes"] == 12 and out["code_vocab"] == 12 * 16 + 1
    assert not codes[0].any() and not tv[:, 0].any()
    assert int(codes[1:].min()) >= 1 and int(codes.max()) <= 12 * 16
    # text vectors: whitened PCA of each view over items 1..N -> zero mean, unit variance
    np.testing.assert_allclose(tv[:, 1:].mean(1).numpy(), 0, atol=1e-4)
    np.testing.assert_allclose(tv[:, 1:].numpy().var(1, ddof=1), 1, atol=1e-3)
    assert StubEncoder.calls == 3  # one call per view
    assert len(list((tmp_path / "cocorec").glob("*.npz"))) == 1

    def boom(*a, **k):
        raise AssertionError("encoder loaded on a cache hit")

    monkeypatch.setattr(E, "load_encoder", boom)
    again = C.ItemFeatures(views=["title", "brand", "description"], encoder="stub", code_pca_dim=16,
                           text_dim=8, codes_per_view=4, bits=4, cache_dir=str(tmp_path)).model_kwargs(_data())
    assert (again["item_codes"] == codes).all() and (again["text_vectors"] == tv).all()


def test_item_features_all_empty_view_names_the_data_fields(tmp_path):
    feats = C.ItemFeatures(views=["title", "features"], encoder="stub", code_pca_dim=16, bits=4,
                           cache_dir=str(tmp_path))
    with pytest.raises(UserError, match=r"'features'.*brand, description, title"):
        feats.model_kwargs(_data())


def test_amazon2023_brand_from_details(tmp_path):
    import gzip
    import json

    from rucai.data.amazon2023 import load_meta

    p = tmp_path / "meta_X.jsonl.gz"
    with gzip.open(p, "wt") as f:
        f.write(json.dumps({"parent_asin": "A", "title": "a", "store": "Shop", "details": {"Brand": "Fender"}}) + "\n")
        f.write(json.dumps({"parent_asin": "B", "title": "b", "store": "Shop2", "details": {"Color": "red"}}) + "\n")
        f.write(json.dumps({"parent_asin": "C", "title": "c"}) + "\n")
    meta = load_meta(p, {"A", "B", "C"})
    assert meta["A"]["brand"] == "Fender" and meta["A"]["details"] == {"Brand": "Fender"}
    assert meta["B"]["brand"] == "Shop2"  # no details["Brand"]: the store is the fallback
    assert "brand" not in meta["C"]
