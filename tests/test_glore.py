"""GLoRE's method on hand cases and a tiny model: the style vector, the domain memory's retrieval
(keys and queries at the same position), the prompt's open assistant turn, reflection markers and
the linear probe."""

from __future__ import annotations

import pytest
import torch

from rucai.glore.method import (
    INSTRUCTION,
    domain_vectors,
    probe_accuracy,
    prompt_ids,
    random_like,
    reflection_count,
    reflection_rate,
    style_vector,
)


def test_style_vector_by_hand():
    long = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    short = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    assert style_vector(long, short).tolist() == [1.5, 2.0]  # mean of (1, 1) and (2, 3)
    with pytest.raises(ValueError):
        style_vector(long, short[:1])


def test_domain_memory_retrieves_the_nearest_keys_by_cosine():
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    values = torch.tensor([[10.0, 0.0], [0.0, 10.0], [5.0, 5.0], [-10.0, 0.0]])
    q = torch.tensor([[2.0, 0.1]])  # cosines: .999, .05, .74, -.999
    assert domain_vectors(keys, values, q, k=2).tolist() == [[7.5, 2.5]]  # keys 0 and 2
    assert domain_vectors(keys, values, q, k=1).tolist() == [[10.0, 0.0]]
    assert domain_vectors(keys, values, q, k=10).tolist() == [values.mean(0).tolist()]


def test_random_control_has_the_norm_of_the_vector():
    v = torch.tensor([3.0, 4.0, 0.0])
    r = random_like(v, seed=1)
    assert float(r.norm()) == pytest.approx(5.0) and not torch.allclose(r / 5, v / 5)


def test_reflection_markers_per_100_tokens():
    text = "Wait, let me check this. So x = 2. Alternatively we verify: wait again"  # 5 markers
    assert reflection_count(text) == 5
    assert reflection_rate(text, 40) == pytest.approx(100 * 5 / 40)
    assert reflection_rate("", 0) == 0.0 and reflection_count("await the waiter; unverified") == 0
    assert reflection_count("Let me double-check. Let me reconsider; verified.") == 3


def test_prompt_ends_with_an_open_assistant_turn_and_keys_match_queries():
    from rucai.llm.models import tiny_causal_lm

    _, tok = tiny_causal_lm(seed=0)
    ids = prompt_ids(tok, "1+1?")
    text = tok.decode(ids)
    assert text.rstrip().endswith("<|assistant|>") or text.endswith(tok.apply_chat_template(
        [{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=True)[-12:])
    assert INSTRUCTION in text and text.index(INSTRUCTION) < text.index("1+1?")  # instruction first
    # a demonstration extends the same prompt: the key (prompt's last token) is the query's position
    demo = prompt_ids(tok, "1+1?", answer=" two")
    assert demo[: len(ids)] == ids


def test_probe_separates_separable_states_and_not_noise():
    g = torch.Generator().manual_seed(0)
    n = 12
    base = torch.randn(n, 8, generator=g)
    x = torch.cat([base + torch.tensor([3.0] + [0.0] * 7), base])  # long = short + a shift along dim 0
    y = torch.cat([torch.ones(n), torch.zeros(n)])
    groups = list(range(n)) * 2  # a problem's two states share a group
    assert probe_accuracy(x, y, groups) == 1.0
    noise = torch.randn(2 * n, 8, generator=g)
    assert probe_accuracy(noise, y, groups) < 0.8


def test_condition_stats_by_hand():
    from rucai.glore.tasks import condition_stats

    rows = [  # seed 0: 2 responses, 100 tokens, 3 markers; seed 1: 2 responses, 50 tokens, 0 markers
        {"sample_idx": 0, "correct": True, "num_tokens": 60, "reflections": 3},
        {"sample_idx": 0, "correct": False, "num_tokens": 40, "reflections": 0},
        {"sample_idx": 1, "correct": False, "num_tokens": 30, "reflections": 0},
        {"sample_idx": 1, "correct": False, "num_tokens": 20, "reflections": 0},
    ]
    s = condition_stats(rows)
    assert s["seeds"] == 2 and s["responses"] == 4
    assert s["accuracy_per_seed"] == [0.5, 0.0] and s["accuracy"] == pytest.approx(0.25)
    assert s["tokens_per_seed"] == [50.0, 25.0]
    assert s["reflection_per_100_tokens_per_seed"] == [3.0, 0.0]
    assert s["reflection_per_100_tokens_std"] == pytest.approx(2 ** 0.5 * 1.5)  # sample std of (3, 0)
    assert s["reflective_share_per_seed"] == [0.5, 0.0]


def test_conditions_put_each_vector_in_its_place():
    from rucai.glore.tasks import condition_vectors

    vec = {"style": torch.tensor([3.0, 4.0]), "style_other_layer": torch.tensor([1.0, 0.0])}
    dom = torch.tensor([0.0, 2.0])
    assert condition_vectors("none", vec, dom, 0) == (None, None, None)
    where, first, last = condition_vectors("both", vec, dom, 0)
    assert where is None and first is vec["style"] and last is dom
    assert condition_vectors("domain", vec, dom, 0)[1:] == (None, dom)
    where, first, last = condition_vectors("random", vec, dom, 0)
    assert last is None and float(first.norm()) == pytest.approx(5.0) and not torch.allclose(first, vec["style"])
    where, first, last = condition_vectors("style_other_layer", vec, dom, 0)
    assert where == "other" and first is vec["style_other_layer"] and last is None


def test_the_steerer_finds_every_glore_prompt_through_the_hf_backend():
    """The backend's rows (chat template, left padding, n samples per prompt) carry exactly the ids
    `prompt_ids` gives, so every row is steered; an edit of a large vector changes the generations."""
    from rucai.glore.method import prompt_messages
    from rucai.llm.base import SamplingParams
    from rucai.llm.hf import HFLLM
    from rucai.llm.models import tiny_causal_lm
    from rucai.llm.steering import Steerer

    model, tok = tiny_causal_lm(seed=0)
    llm = HFLLM(model, tok, batch_size=4)
    problems = ["1+1?", "what is 2 times 3?", "x"]
    msgs = [prompt_messages(p) for p in problems]
    sp = SamplingParams(temperature=0.0, max_tokens=5)
    plain = [o.text for o in llm.generate(msgs, sp)]
    v = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(0)) * 100
    st = Steerer(model, layer=0, strength=1.0, decode=True)
    for p in problems:
        st.set(prompt_ids(tok, p), first=v, last=-v)
    with st:
        steered = [o.text for o in llm.generate(msgs, sp.replace(temperature=1.0, n=2, seed=0))]
        greedy = [o.text for o in llm.generate(msgs, sp)]
    assert st.misses == 0
    assert greedy != plain
    st2 = Steerer(model, layer=0)
    st2.set(prompt_ids(tok, "another problem"), first=v)
    with st2:
        llm.generate(msgs, sp)
    assert st2.misses == len(problems) and steered


def test_demonstrations_from_r1_traces_and_still_data(tmp_path):
    import json

    from rucai.errors import UserError
    from rucai.glore.tasks import load_demos, think_text

    assert think_text("<think>\nlong one\n</think> final") == "long one"
    assert think_text("<|begin_of_thought|>\n\nwait\n\n<|end_of_thought|>\n\n<|begin_of_solution|>s") == "wait"
    assert think_text("plain") == "plain"
    f = tmp_path / "still.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in [
        {"question": "q1", "combined_text": "<|begin_of_thought|>a<|end_of_thought|>", "domain": "math"},
        {"question": "q2", "combined_text": "<|begin_of_thought|>b<|end_of_thought|>", "domain": "physics"},
    ]))
    assert load_demos(f, "math") == [("q1", "a")] and len(load_demos(f)) == 2
    with pytest.raises(UserError, match="no demonstrations of domain code"):
        load_demos(f, "code")
