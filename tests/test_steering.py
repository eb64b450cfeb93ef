"""Representation steering (rucai.llm.steering) on a tiny random Llama: zero edits change nothing,
prefill edits touch only the chosen positions, norms are preserved, batching with left padding gives
the per-prompt result, and the decode switch."""

from __future__ import annotations

import pytest
import torch

from rucai.llm.steering import Steerer, decoder_layers, edit, layer_states, load_vectors, save_vectors


@pytest.fixture(scope="module")
def tiny(tiny_hf_llm):
    return tiny_hf_llm


def capture(model, layer):
    out = []
    h = decoder_layers(model)[layer].register_forward_hook(lambda m, i, o: out.append((o[0] if isinstance(o, tuple) else o).detach().clone()))
    return out, h


def test_edit_by_hand_preserves_the_norm():
    h = torch.tensor([3.0, 4.0])
    v = torch.tensor([0.0, 10.0])
    out = edit(h, v, 0.1)  # (3, 5) scaled to norm 5
    assert out.tolist() == pytest.approx([3 * 5 / 34 ** 0.5, 5 * 5 / 34 ** 0.5])
    assert float(out.norm()) == pytest.approx(5.0)
    assert torch.equal(edit(h, torch.zeros(2), 0.1), h) and torch.equal(edit(h, v, 0.0), h)


def test_zero_vector_leaves_logits_unchanged_and_prefill_edits_only_the_chosen_positions(tiny):
    m = tiny.model
    ids = tiny.encode("the cat sat on the mat")
    x = torch.tensor([ids])
    D = m.config.hidden_size
    with torch.no_grad():
        base = m(input_ids=x).logits
    st = Steerer(m, layer=1, strength=0.1)
    st.set(ids, first=torch.zeros(D), last=torch.zeros(D))
    with st, torch.no_grad():
        assert torch.allclose(m(input_ids=x, attention_mask=torch.ones_like(x)).logits, base, atol=1e-6)
    g = torch.Generator().manual_seed(0)
    st.set(ids, first=torch.randn(D, generator=g) * 5, last=torch.randn(D, generator=g) * 5)
    grabbed, h = capture(m, 1)
    try:
        with torch.no_grad():
            m(input_ids=x)
    finally:
        h.remove()
    with st, torch.no_grad():
        grabbed2, h = capture(m, 1)  # registered after the steering hook: sees the edited output
        try:
            m(input_ids=x, attention_mask=torch.ones_like(x))
        finally:
            h.remove()
    before, after = grabbed[0][0], grabbed2[0][0]
    changed = (before - after).abs().amax(-1) > 1e-6
    assert changed.tolist() == [True] + [False] * (len(ids) - 2) + [True]
    assert torch.allclose(before.norm(dim=-1), after.norm(dim=-1), atol=1e-4)


def test_left_padded_batches_match_single_prompts_and_rows_find_their_vectors(tiny):
    m = tiny.model
    D = m.config.hidden_size
    prompts = ["a b c d e f g", "x y"]
    ids = [tiny.encode(p) for p in prompts]
    g = torch.Generator().manual_seed(1)
    vecs = [torch.randn(D, generator=g) * 3 for _ in prompts]
    st = Steerer(m, layer=0, strength=0.5)
    for i, v in zip(ids, vecs, strict=True):
        st.set(i, first=v, last=-v)
    singles = []
    with st, torch.no_grad():
        for i in ids:
            singles.append(m(input_ids=torch.tensor([i]), attention_mask=torch.ones(1, len(i), dtype=torch.long)).logits[0, -1])
    width = max(len(i) for i in ids)
    x = torch.full((2, width), tiny.pad_id)
    att = torch.zeros((2, width), dtype=torch.long)
    for r, i in enumerate(ids[::-1]):  # the reversed order: rows are matched by their tokens
        x[r, width - len(i):] = torch.tensor(i)
        att[r, width - len(i):] = 1
    with st, torch.no_grad():
        pos = (att.cumsum(-1) - 1).clamp(min=0)
        batch = m(input_ids=x, attention_mask=att, position_ids=pos).logits[:, -1]
    assert torch.allclose(batch[0], singles[1], atol=1e-4) and torch.allclose(batch[1], singles[0], atol=1e-4)


def test_decode_switch_and_generation(tiny):
    from rucai.llm.base import SamplingParams

    m = tiny.model
    D = m.config.hidden_size
    ids = tiny.encode("one two three")
    v = torch.randn(D, generator=torch.Generator().manual_seed(2)) * 50
    sp = SamplingParams(temperature=0.0, max_tokens=6)
    plain = tiny.generate(["one two three"], sp)[0].text
    outs = {}
    for decode in (False, True):
        st = Steerer(m, layer=1, strength=1.0, decode=decode)
        st.set(ids, last=v)
        with st:
            outs[decode] = tiny.generate(["one two three"], sp)[0].text
        st.set(ids, last=torch.zeros(D))
        with st:  # a zero vector, with decoding edits on: the unsteered text
            assert tiny.generate(["one two three"], sp)[0].text == plain
    assert outs[True] != outs[False] or outs[True] != plain  # a strength-1 edit of norm 50 changes the text


def test_layer_states_positions_and_safetensors_roundtrip(tiny, tmp_path):
    m = tiny.model
    ids = [tiny.encode("a b c"), tiny.encode("d e f g")]
    s = layer_states(m, ids, layer=1, positions=-1)
    grabbed, h = capture(m, 1)
    try:
        with torch.no_grad():
            m(input_ids=torch.tensor([ids[1]]))
    finally:
        h.remove()
    assert torch.allclose(s[1], grabbed[0][0, -1].float())
    s2 = layer_states(m, ids, layer=1, positions=[-2, 0])
    assert not torch.allclose(s2[0], s[0])
    p = save_vectors(tmp_path / "v.safetensors", {"style": s[0]}, {"layer": 1})
    assert torch.equal(load_vectors(p)["style"], s[0])


def test_layer_states_of_several_layers_in_one_pass(tiny):
    ids = [tiny.encode("a b c"), tiny.encode("d e f g")]
    both = layer_states(tiny.model, ids, layer=[1, 0], positions=[-1, 1])
    assert both.shape == (2, 2, tiny.model.config.hidden_size)
    assert torch.allclose(both[0], layer_states(tiny.model, ids, layer=1, positions=[-1, 1]))
    assert torch.allclose(both[1], layer_states(tiny.model, ids, layer=0, positions=[-1, 1]))
