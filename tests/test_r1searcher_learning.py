"""R1-Searcher's RL step learns in the direction of its reward, end to end (issue 13 item 5).

A random tiny policy is trained by the real `rucai.r1searcher.rl.train_stage` (search rollouts through
the hf backend -> reward -> group advantages -> token advantages and the response loss mask -> clipped
policy-gradient update) with a reward that pays for writing the query tag `<|begin_of_query|>`. We
measure the probability of the tag as the first response token after the training prompt, teacher
forced (softmax of the last prompt position), before and after training:

- rewarding the tag raises it several-fold;
- the same run with lr=0 leaves the weights, so the probability, exactly unchanged;
- punishing the tag (reward -1 when it appears) lowers it several-fold.

Why a tiny vocabulary: under SmolLM2's tokenizer the tag is several tokens of a 49k vocabulary, which
a random policy never samples (every rollout would get the same reward and a zero advantage). Here
the policy's tokenizer is a word-level vocabulary of 19 entries in which the tag is one ordinary
(non-special) token, so a random policy writes it in roughly a fifth of its 4-token responses and
the rollouts of one prompt disagree. `<|end_of_query|>` and `</answer>` are tokens too: a rollout
that writes the former gets an (empty, retriever-less) document block inserted, masked out of the
loss, and generation continues; the latter ends it. The policy is
`rucai.r1searcher.tasks.tiny_policy` (the smoke runs' random Llama) built on that tokenizer.
Everything else is the training code as the CPU runs use it.
"""

from __future__ import annotations

import pytest

from rucai.r1searcher.prompts import BEGIN_QUERY, END_ANSWER, END_QUERY
from tests.conftest import compose_config

# the rollout engine's stop strings (transformers' StopStringCriteria needs tokens that spell them) and
# "abcdef", the probe word that matcher encodes to read a vocabulary
WORDS = [f"w{i}" for i in range(12)] + [END_QUERY, END_ANSWER, "abcdef"]
# 10 steps: the tag's rate among rollouts reaches ~1 by step 7 (lr 3e-2). Run for 25-30, the policy drifts
# to empty responses ending in EOS and the rate falls again: `tokenize_rollout` re-tokenises the response
# text, so the EOS that ended a rollout is never a loss token and an empty rollout has none at all, so
# nothing pushes EOS-first down (the authors' OpenRLHF trains on vLLM's token ids, EOS included)
STEPS = 10
QUESTIONS = [{"question": "w1 w2 w3", "answer": "w4"}, {"question": "w5 w6", "answer": "w7"}]


def _tag_reward(response: str, golds, prompt_opens_think: bool = True) -> dict[str, float]:
    hit = 1.0 if BEGIN_QUERY in response else 0.0
    return {"retrieval": hit, "format": 0.0, "answer": 0.0, "total": hit}


def _no_tag_reward(response: str, golds, prompt_opens_think: bool = True) -> dict[str, float]:
    hit = -1.0 if BEGIN_QUERY in response else 0.0
    return {"retrieval": hit, "format": 0.0, "answer": 0.0, "total": hit}


@pytest.fixture(scope="module")
def policy(tmp_path_factory) -> str:
    """A random tiny Llama on a 19-word tokenizer in which the query tag is one token."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from rucai.r1searcher.tasks import tiny_policy

    root = tmp_path_factory.mktemp("tag_policy")
    vocab = {w: i for i, w in enumerate(["<unk>", "<pad>", "</s>", BEGIN_QUERY, *WORDS])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token="<pad>", eos_token="</s>")
    tok.save_pretrained(root / "tokenizer")
    return tiny_policy(str(root / "tokenizer"), root / "cache", hidden=32, layers=2)


def _p_tag(policy_dir: str) -> float:
    """Mean over the training prompts of p(tag | prompt), teacher forced."""
    import torch

    from rucai import runtime
    from rucai.r1searcher.prompts import search_prompt

    tok = runtime.load_tokenizer(policy_dir)
    model = runtime.load_causal_lm(policy_dir, compose_config("hardware=cpu").hardware, dtype="float32").eval()
    tag = tok.convert_tokens_to_ids(BEGIN_QUERY)
    assert tok(BEGIN_QUERY, add_special_tokens=False)["input_ids"] == [tag]  # one token, as the rollouts see it
    ps = []
    with torch.no_grad():
        for row in QUESTIONS:
            ids = tok(search_prompt(row["question"], "base", tok), add_special_tokens=True)["input_ids"]
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1].float()
            ps.append(float(torch.softmax(logits, -1)[tag]))
    return sum(ps) / len(ps)


def _train(policy: str, out, reward: str, lr: float, monkeypatch) -> tuple[str, list[dict]]:
    import csv

    from rucai.r1searcher import rewards
    from rucai.r1searcher.config import RLStageConfig
    from rucai.r1searcher.rl import train_stage

    monkeypatch.setitem(rewards.REWARDS, "test_query_tag", _tag_reward)
    monkeypatch.setitem(rewards.REWARDS, "test_no_query_tag", _no_tag_reward)
    s = RLStageConfig(data="-", reward=reward, steps=STEPS, prompts_per_step=2, n_samples=8, train_batch_size=None,
                      lr=lr, micro_batch_size=16, temperature=1.0, max_tokens_per_round=4, max_response_tokens=4,
                      gradient_checkpointing=False, checkpoint_every=0)
    res = train_stage(policy, out, QUESTIONS, None, s, hardware=compose_config("hardware=cpu").hardware,
                      prompt_style="base", seed=0)
    with open(out / "rewards.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return res["policy"], rows


def test_rewarding_the_query_tag_raises_its_probability_and_lr0_changes_nothing(policy, tmp_path, monkeypatch):
    import torch
    from safetensors.torch import load_file

    before = _p_tag(policy)
    assert 0.02 < before < 0.2  # a random policy over 18 usable tokens: near 1/18, so the tag gets sampled

    trained, rows = _train(policy, tmp_path / "up", "test_query_tag", 3e-2, monkeypatch)
    after = _p_tag(trained)
    assert after > 5 * before and after > 0.4, (before, after)
    # the rollouts followed: the share writing the tag rose from the first 3 steps to the last 3
    first = sum(float(r["reward/total"]) for r in rows[:3]) / 3
    last = sum(float(r["reward/total"]) for r in rows[-3:]) / 3
    assert last > first + 0.4, (first, last)

    control, _ = _train(policy, tmp_path / "lr0", "test_query_tag", 0.0, monkeypatch)
    assert _p_tag(control) == before
    w0, w1 = load_file(f"{policy}/model.safetensors"), load_file(f"{control}/model.safetensors")
    assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0)


def test_punishing_the_query_tag_lowers_its_probability(policy, tmp_path, monkeypatch):
    before = _p_tag(policy)
    trained, _ = _train(policy, tmp_path / "down", "test_no_query_tag", 3e-2, monkeypatch)
    after = _p_tag(trained)
    assert after < before / 3, (before, after)
