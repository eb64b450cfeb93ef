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


def test_reflection_rate_per_100_words():
    text = "Wait, let me check this. So x = 2. Alternatively we verify: wait again"  # 14 words, 5 markers
    assert reflection_rate(text) == pytest.approx(100 * 5 / 14)
    assert reflection_rate("") == 0.0 and reflection_rate("await the waiter") == 0.0


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
