"""Item text embeddings: text construction, padding row, on-disk cache, encoder resolution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rucai.errors import UserError
from rucai.rec import embeddings as E

ITEMS = {
    1: {"title": "Stapler", "brand": "Acme", "description": "  Heavy\n duty  "},
    2: {"title": "Pen", "brand": "", "description": ["Blue", "ink"]},
    4: {"title": "Paper"},
}


class FakeEncoder:
    calls = 0

    def encode(self, texts, **kw):
        FakeEncoder.calls += 1
        return np.array([[len(t), t.count(":"), 1.0] for t in texts], dtype=np.float32)


def test_text_from_fields_in_configured_order():
    assert E.item_to_text(ITEMS[1]) == "title: Stapler; brand: Acme; description: Heavy duty"
    assert E.item_to_text(ITEMS[1], fields=("brand", "title")) == "brand: Acme; title: Stapler"
    assert E.item_to_text(ITEMS[2]) == "title: Pen; description: Blue ink"  # empty brand skipped
    assert E.item_to_text(None) == ""
    texts = E.build_texts(ITEMS, fields=("title",), num_items=5)
    assert texts == ["title: Stapler", "title: Pen", "", "title: Paper", ""]


def test_encode_row0_zero_and_cache_hit_skips_encoder(tmp_path, monkeypatch):
    FakeEncoder.calls = 0
    monkeypatch.setattr(E, "load_encoder", lambda name, device=None: FakeEncoder())
    emb = E.encode_items(ITEMS, encoder="fake", cache_dir=tmp_path)
    assert emb.shape == (5, 3) and emb.dtype == np.float32
    assert not emb[0].any() and emb[1:, 2].all()
    files = list((tmp_path / "embeddings").iterdir())
    assert len(files) == 1 and files[0].suffix == ".npy"  # no temp file left behind
    assert files[0].stem == E.cache_key("fake", E.DEFAULT_FIELDS, E.build_texts(ITEMS))

    def boom(*a, **k):
        raise AssertionError("encoder constructed on a cache hit")

    monkeypatch.setattr(E, "load_encoder", boom)
    again = E.encode_items(ITEMS, encoder="fake", cache_dir=tmp_path)
    np.testing.assert_array_equal(again, emb)
    assert FakeEncoder.calls == 1

    # a different field set, encoder or text is a different key -> encodes again
    monkeypatch.setattr(E, "load_encoder", lambda name, device=None: FakeEncoder())
    E.encode_items(ITEMS, encoder="fake", fields=("title",), cache_dir=tmp_path)
    E.encode_items({**ITEMS, 4: {"title": "Paper!"}}, encoder="fake", cache_dir=tmp_path)
    assert FakeEncoder.calls == 3
    assert len(list((tmp_path / "embeddings").glob("*.npy"))) == 3


def test_default_encoder_resolves_to_packaged_model():
    path = Path(E.resolve_encoder(E.DEFAULT_ENCODER))
    assert (path / "modules.json").is_file()
    assert E.resolve_encoder("sentence-t5-base") == "sentence-t5-base"


def test_missing_encoder_is_one_line_user_error(monkeypatch):
    class Broken:
        def __init__(self, *a, **k):
            raise OSError("offline: cannot reach huggingface.co\nmore lines")

    import sentence_transformers

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", Broken)
    with pytest.raises(UserError) as e:
        E.load_encoder("sentence-t5-base")
    msg = str(e.value)
    assert "\n" not in msg and "sentence-t5-base" in msg and "encoder=" in msg


def test_packaged_minilm_encodes_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    emb = E.encode_items(ITEMS, cache_dir=tmp_path, batch_size=8)
    assert emb.shape == (5, 384)
    assert not emb[0].any()
    np.testing.assert_allclose(np.linalg.norm(emb[1:], axis=1), 1.0, atol=1e-4)  # MiniLM normalizes
