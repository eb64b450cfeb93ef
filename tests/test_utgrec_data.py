"""UTGRec data side (text-only CPU path): item text, token-state cache, whole-word masking,
co-occurrence positives, the batch layout. No MiniLM model load: a tiny fake encoder stands in;
the real WordPiece tokenizer is read from the packaged folder (tokenizer files only)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rucai.data.sequential import SequenceData
from rucai.errors import UserError
from rucai.utgrec import data as ud

DIM = 8


@pytest.fixture(scope="module")
def wordpiece():
    from rucai.rec.embeddings import resolve_encoder
    from rucai.runtime import load_tokenizer

    try:
        return load_tokenizer(resolve_encoder("all-minilm-l6-v2"))
    except UserError as e:  # pragma: no cover
        pytest.skip(str(e))


class FakeEncoder(torch.nn.Module):
    """last_hidden_state = word embedding + position * 0.01 (a deterministic stand-in for MiniLM)."""

    def __init__(self, vocab: int):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.emb = torch.nn.Embedding(vocab, DIM)
        self.emb.weight.data = torch.randn(vocab, DIM, generator=g)

    def get_input_embeddings(self):
        return self.emb

    def forward(self, input_ids, attention_mask):
        pos = torch.arange(input_ids.shape[1], dtype=torch.float32)[None, :, None] * 0.01
        return SimpleNamespace(last_hidden_state=self.emb(input_ids) + pos)


@pytest.fixture
def fake_loader(wordpiece, monkeypatch):
    calls = []

    def load(encoder):
        calls.append(encoder)
        return wordpiece, FakeEncoder(len(wordpiece))

    monkeypatch.setattr(ud, "load_token_encoder", load)
    return calls


def tiny_data() -> SequenceData:
    texts = {1: {"title": "Stapler", "brand": "Swingline", "description": "Heavy-duty stapler."},
             2: {"title": "Unbelievably ergonomic keyboard", "brand": "Logitech"},
             3: {"title": "Paper clips", "description": "<b>Box</b> of 100..."},
             4: {"title": "Sticky notes"}, 5: {"title": "Pen"}, 6: {"title": "Pencil sharpener"},
             7: {"title": "Tape"}, 8: {"title": "Ruler"}, 9: {}}
    return SequenceData("tiny", [[1, 2, 3, 4, 5], [3, 6, 7, 8]], 9, texts)


# ------------------------------------------------------------------------------------------- text

def test_item_texts_sentence_style_and_field_order():
    d = tiny_data()
    assert ud.default_fields(d) == ["title", "brand", "description"]
    t = ud.item_texts(d)
    assert len(t) == 9
    assert t[0] == "Stapler. Swingline. Heavy-duty stapler."
    assert t[2] == "Paper clips. Box of 100."  # tags dropped, trailing dots collapsed
    assert t[8] == ""
    ml = SequenceData("ml", [[1]], 1, {1: {"movie_title": "Toy Story", "release_year": "1995",
                                           "class": "Animation Children's Comedy"}})
    assert ud.item_texts(ml) == ["Toy Story. 1995. Animation Children's Comedy."]
    assert ud.item_texts(d, ["brand"])[1] == "Logitech."
    with pytest.raises(UserError):
        ud.item_texts(d, [])


# ---------------------------------------------------------------------------------------- masking

def _tok_facts(wordpiece):
    f = ud.vocab_facts(wordpiece)
    cand = torch.tensor([i for i in range(f["vocab_size"]) if i not in f["special_ids"]])
    return f, torch.from_numpy(f["continuation"]), cand


def test_every_word_masked_at_rate_one_specials_never(wordpiece):
    f, cont, cand = _tok_facts(wordpiece)
    ids = torch.tensor(wordpiece("Unbelievably ergonomic keyboard, stapler")["input_ids"])
    out, labels = ud.whole_word_mask(ids, cont, f["special_ids"], f["mask_token_id"], cand,
                                     torch.Generator().manual_seed(0), rate=1.0)
    special = torch.tensor([int(i) in f["special_ids"] for i in ids])
    assert special[0] and special[-1]  # [CLS] ... [SEP]
    assert torch.equal(labels[~special], ids[~special])  # every non-special token labelled
    assert (labels[special] == -100).all() and torch.equal(out[special], ids[special])


def test_word_pieces_masked_together(wordpiece):
    f, cont, cand = _tok_facts(wordpiece)
    text = "unbelievably ergonomic staplers and the incomprehensible paperclips " * 6
    ids = torch.tensor(wordpiece(text)["input_ids"])
    toks = wordpiece.convert_ids_to_tokens(ids.tolist())
    assert any(t.startswith("##") for t in toks)
    words, cur = [], None  # hand grouping from the token strings
    for p, t in enumerate(toks):
        if t in ("[CLS]", "[SEP]"):
            continue
        if t.startswith("##"):
            cur.append(p)
        else:
            cur = [p]
            words.append(cur)
    multi = [w for w in words if len(w) > 1]
    assert multi
    budget = round(len(ids) * 0.3)
    partial_seen = False
    for seed in range(40):
        _, labels = ud.whole_word_mask(ids, cont, f["special_ids"], f["mask_token_id"], cand,
                                       torch.Generator().manual_seed(seed), rate=0.3)
        sel = labels != -100
        assert int(sel.sum()) <= budget
        for w in words:
            assert sel[w].all() or not sel[w].any(), (seed, [toks[p] for p in w])
        partial_seen |= any(sel[w].all() for w in multi) and not all(sel[w].all() for w in words)
    assert partial_seen


def test_80_10_10_proportions_deterministic():
    v = 1000
    cont = torch.zeros(v, dtype=torch.bool)
    cont[500:] = True  # ids >= 500 continue a word
    g0 = torch.Generator().manual_seed(1)
    ids = torch.randint(5, v, (20000,), generator=g0)
    ids[0], ids[-1] = 1, 2  # [CLS], [SEP]
    special, mask_id = [0, 1, 2, 3], 3
    cand = torch.arange(4, v)
    out, labels = ud.whole_word_mask(ids, cont, special, mask_id, cand, torch.Generator().manual_seed(7),
                                     rate=1.0, max_predictions=10**9)
    sel = labels != -100
    assert int(sel.sum()) == len(ids) - 2 and labels[0] == -100 and labels[-1] == -100
    n = sel.sum().item()
    masked = (out[sel] == mask_id).float().sum().item() / n
    kept = (out[sel] == ids[sel]).float().sum().item() / n
    rand = 1 - masked - kept
    assert abs(masked - 0.8) < 0.015 and abs(kept - 0.1) < 0.015 and abs(rand - 0.1) < 0.015
    assert not torch.isin(out[sel & (out != mask_id)], torch.tensor(special)).any()
    out2, labels2 = ud.whole_word_mask(ids, cont, special, mask_id, cand, torch.Generator().manual_seed(7),
                                       rate=1.0, max_predictions=10**9)
    assert torch.equal(out, out2) and torch.equal(labels, labels2)


def test_budget_caps_at_max_predictions():
    cont = torch.zeros(10, dtype=torch.bool)
    ids = torch.tensor([1] + [5] * 20 + [2])
    _, labels = ud.whole_word_mask(ids, cont, [0, 1, 2, 3], 3, torch.arange(4, 10),
                                   torch.Generator().manual_seed(0), rate=1.0, max_predictions=7)
    assert int((labels != -100).sum()) == 7


# ---------------------------------------------------------------------------------- co-occurrence

def test_neighbours_from_training_parts_only():
    d = tiny_data()  # training parts: [1, 2, 3] and [3, 6]
    nb = ud.cooccurrence_neighbours(d.sequences, d.num_items)
    assert nb[1] == [2] and nb[2] == [1, 3] and nb[3] == [2, 6] and nb[6] == [3]
    # 4, 5 (user 1's last two) and 7, 8 (user 2's) make no relation; 9 never occurs
    assert nb[4] == [4] and nb[5] == [5] and nb[7] == [7] and nb[8] == [8] and nb[9] == [9]
    assert ud.cooccurrence_neighbours([[4, 1, 2]], 4)[4] == [4]  # alone in its training part
    assert ud.cooccurrence_neighbours([[5, 5, 1, 2]], 5)[5] == [5]  # a repeat is adjacent to itself
    assert ud.training_items(d.sequences) == [1, 2, 3, 6]


def test_positive_is_random_neighbour_or_self(fake_loader, tmp_path):
    d = tiny_data()
    st = ud.TokenStates.build(ud.item_texts(d), cache_dir=tmp_path)
    ds = ud.UTGItemDataset(st, d.sequences, items="all", seed=3)
    idx2, idx4 = ds.items.index(2), ds.items.index(4)
    pos2 = {ds[(idx2, e)]["pos"] for e in range(40)}
    assert pos2 == {1, 3}
    assert {ds[(idx4, e)]["pos"] for e in range(5)} == {4}
    a, b = ds[(idx2, 5)], ds[(idx2, 5)]
    assert a["pos"] == b["pos"] and torch.equal(a["text_input"], b["text_input"])
    assert ud.UTGItemDataset(st, d.sequences, items="train").items == [1, 2, 3, 6]
    with pytest.raises(UserError):
        ud.UTGItemDataset(st, d.sequences, items="valid")


# --------------------------------------------------------------------------- states, cache, collate

def test_token_state_cache_hit_skips_encoder(fake_loader, tmp_path, wordpiece, monkeypatch):
    texts = ud.item_texts(tiny_data())
    st = ud.TokenStates.build(texts, max_tokens=6, cache_dir=tmp_path)
    assert fake_loader == ["all-minilm-l6-v2"]
    files = list((tmp_path / "utgrec").glob("*.npz"))
    assert len(files) == 1 and len(files[0].stem) == 64
    assert st.num_items == 9 and st.dim == DIM and st.lengths.max() == 6 and st.lengths.min() == 2  # "" -> [CLS][SEP]
    ids1 = wordpiece(texts[0], truncation=True, max_length=6)["input_ids"]
    assert st.input_ids(1).tolist() == ids1
    enc = FakeEncoder(len(wordpiece))
    want = enc.emb(torch.tensor(ids1)) + torch.arange(6.0)[:, None] * 0.01
    np.testing.assert_allclose(st.states(1).astype(np.float32), want.detach().numpy(), atol=2e-3)
    assert st.word_embeddings.shape == (len(wordpiece), DIM) and st.vocab_size == len(wordpiece)
    assert (st.mask_token_id, st.pad_token_id, st.cls_token_id, st.sep_token_id) == (103, 0, 101, 102)

    def boom(encoder):
        raise AssertionError("cache hit must not load the encoder")

    monkeypatch.setattr(ud, "load_token_encoder", boom)
    st2 = ud.TokenStates.build(texts, max_tokens=6, cache_dir=tmp_path)
    assert np.array_equal(st2.flat_states, st.flat_states) and np.array_equal(st2.offsets, st.offsets)
    with pytest.raises(AssertionError):  # another max_tokens is another key
        ud.TokenStates.build(texts, max_tokens=7, cache_dir=tmp_path)


def test_collate_shapes_dtypes_padding(fake_loader, tmp_path):
    d = tiny_data()
    st = ud.TokenStates.build(ud.item_texts(d), cache_dir=tmp_path)
    ds = ud.UTGItemDataset(st, d.sequences, items="all", seed=0)
    ex = [ds[(i, 0)] for i in range(len(ds))]
    b = ud.collate_utg(ex, pad_token_id=st.pad_token_id)
    assert list(b) == list(ud.BATCH_KEYS)
    n, lens = len(ds), [len(e["text_input"]) for e in ex]
    plens = [len(e["pos_text_input"]) for e in ex]
    assert b["item"].dtype == torch.long and b["item"].tolist() == list(range(1, 10))
    assert b["states"].shape == (n, max(lens), DIM) and b["states"].dtype == torch.float32
    assert b["pos_states"].shape == (n, max(plens), DIM)
    for k in ("state_mask", "pos_state_mask", "text_mask", "pos_text_mask"):
        assert b[k].dtype == torch.bool
    for k in ("text_input", "text_labels", "pos_text_input", "pos_text_labels"):
        assert b[k].dtype == torch.long
    assert b["text_input"].shape == b["text_labels"].shape == b["text_mask"].shape == (n, max(lens))
    assert torch.equal(b["state_mask"], b["text_mask"])  # states and decoder ids: one tokenisation
    assert b["text_mask"].sum(1).tolist() == lens and b["pos_text_mask"].sum(1).tolist() == plens
    short = lens.index(min(lens))
    assert (b["text_input"][short, min(lens):] == st.pad_token_id).all()
    assert (b["text_labels"][short, min(lens):] == -100).all()
    assert (b["states"][short, min(lens):] == 0).all()
    s2, m2 = st.batch(range(1, 10))  # unmasked states for code generation: the same rows
    assert torch.equal(s2, b["states"]) and torch.equal(m2, b["state_mask"])
    # at the authors' rate 1.0 every real non-special token carries its original id as label
    for r in range(n):
        ids = torch.from_numpy(st.input_ids(r + 1))
        real = ~torch.isin(ids, torch.tensor(st.special_ids))
        assert torch.equal(b["text_labels"][r, : len(ids)][real], ids[real])
        assert (b["text_labels"][r, : len(ids)][~real] == -100).all()


def test_datamodule_batches(fake_loader, tmp_path):
    dm = ud.UTGTokenizerData(tiny_data, batch_size=3, cache_dir=str(tmp_path), seed=1, items="all")
    dm.setup()
    dl = dm.train_dataloader()
    batches = list(dl)
    assert sorted(sum((x["item"].tolist() for x in batches), [])) == list(range(1, 10))
    assert all(list(x) == list(ud.BATCH_KEYS) for x in batches)
    dl.sampler.set_epoch(1)
    assert [x["item"].tolist() for x in dl] != [x["item"].tolist() for x in batches]
    with pytest.raises(UserError):
        ud.load_sequence_data({"dir": "x"})
