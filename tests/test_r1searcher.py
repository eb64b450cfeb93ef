"""R1-Searcher: rewards on hand-made responses, advantages, the rollout engine and its loss mask; the
method settings (typed, checked), the Fabric strategies, step checkpoints and resume, the smoke pipeline."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from rucai.llm.base import LLM, Completion, RequestOutput, SamplingParams
from rucai.r1searcher.prompts import BASE_PROMPT, CHAT_DEMO, END_QUERY, extract_answer, search_prompt
from rucai.r1searcher.rewards import REWARDS, count_searches, format_ok, get_reward, strict_format_ok
from rucai.r1searcher.rl import group_advantages, token_advantages
from rucai.r1searcher.rollout import SearchRolloutEngine, documents_block, search_hf_llm, tokenize_rollout
from rucai.retrieval import Passage, load_retriever
from rucai.retrieval.index import build_index
from tests.conftest import DATA_DIR, ROOT, compose_config, needs_data, run_cli

DOCS = "\n\n<|begin_of_documents|>\n(1)Kauffman Stadium\nA ballpark.\n<|end_of_documents|>\n\n"
GOOD = (" I need the stadium. <|begin_of_query|> Truman Sports Complex stadium<|end_of_query|>" + DOCS +
        "It is Kauffman Stadium. </think>\n\n<answer> Kauffman Stadium </answer>")
NO_SEARCH = " I know it. </think>\n\n<answer> Kauffman Stadium </answer>"


# ---- rewards --------------------------------------------------------------------------------

def test_format_ok_hand_made_cases():
    assert format_ok(GOOD) and format_ok(NO_SEARCH)
    assert not format_ok(" no think close <answer> x </answer>")                     # missing </think>
    assert not format_ok(" </think> no answer tag")                                   # no answer
    assert not format_ok(" </think><answer> a </answer><answer> b </answer>")         # two answers
    assert not format_ok(" </think><answer> a" + DOCS + "</answer>")                  # documents in the answer
    assert not format_ok(" </think><answer> <|begin_of_query|> x </answer>")          # query in the answer
    assert not format_ok(" <think> again </think><answer> a </answer>")               # prompt already opened <think>
    assert not format_ok(" <answer> a </answer> </think>")                            # answer before </think>
    assert not format_ok(" <|begin_of_query|> q<|end_of_query|> </think><answer> a </answer>")  # query, no docs
    assert format_ok("<think> x </think><answer> a </answer>", prompt_opens_think=False)


def test_stage1_reward_paper():
    r = get_reward("paper_stage1")
    assert r(GOOD, "Kauffman Stadium") == {"retrieval": 0.5, "format": 0.5, "answer": 0.0, "total": 1.0}
    assert r(NO_SEARCH, "x")["total"] == 0.5  # format only
    bad_with_search = GOOD.replace("</think>", "")
    assert r(bad_with_search, "x") == {"retrieval": 0.5, "format": 0.0, "answer": 0.0, "total": 0.5}
    assert r(" rambling", "x")["total"] == 0.0


def test_stage2_reward_paper_f1_and_penalty():
    r = get_reward("paper_stage2")
    assert r(GOOD, "Kauffman Stadium")["total"] == 1.0
    assert r(GOOD, "Kauffman Stadium Kansas City")["total"] == pytest.approx(2 * 1 * 0.5 / 1.5)  # P=1, R=1/2
    out = r(" Kauffman Stadium </think> no tag", "Kauffman Stadium")  # no answer tag: F1 0, penalty
    assert out == {"retrieval": 0.0, "format": -2.0, "answer": 0.0, "total": -2.0}
    two = " </think><answer> Kauffman Stadium </answer><answer> x </answer>"  # multiple answers
    assert r(two, "x")["format"] == -2.0 and r(two, "x")["answer"] == 1.0  # the last answer is scored
    docs_in = " </think><answer> Kauffman" + DOCS + "</answer>"
    assert r(docs_in, "Kauffman")["format"] == -2.0


def test_released_variants():
    q = get_reward("qwen_base_stage2")
    assert q(GOOD, "Kauffman Stadium")["total"] == 1.0
    long_answer = " </think><answer> " + " ".join(["word"] * 11) + " </answer>"
    assert get_reward("paper_stage2")(long_answer, "word")["format"] == 0.0
    assert q(long_answer, "word")["format"] == -2.0                       # > 10 words
    assert q(" Assistant: </think><answer> b </answer>", "b")["total"] == -1.0   # 'Assistant' in the response
    # the authors' F1: an answer that normalises to nothing ("a" is an article) scores 0, not 1
    assert q(" </think><answer> a </answer>", "a")["answer"] == 0.0
    assert not strict_format_ok(" 北京 </think><answer> a </answer>")
    assert strict_format_ok(" </think><answer> a </answer>" .replace("a </", "a </"))
    cem = get_reward("llama_stage1_cem")
    assert cem(" </think><answer> it is Kauffman Stadium </answer>", "Kauffman Stadium")["total"] == 1.0
    assert cem(" </think><answer> Arrowhead </answer>", "Kauffman Stadium")["total"] == -1.0
    assert cem(" Kauffman Stadium", "Kauffman Stadium")["total"] == -1.0  # no answer tag
    assert set(REWARDS) >= {"paper_stage1", "paper_stage2", "qwen_base_stage2", "llama_stage1_cem", "llama_stage1"}


def test_llama_stage1_released_server_terms():
    """train/reward_server_llama_stage1.py: cover-EM +1/-1, +0.5 when query and document tags all
    occur equally often (>= 1, blocks starting `(1)`), +0.5 for one </think>/<answer>/</answer>."""
    r = get_reward("llama_stage1")
    assert r(GOOD, "Kauffman Stadium") == {"retrieval": 0.5, "format": 0.5, "answer": 1.0, "total": 2.0}
    assert r(NO_SEARCH, "Kauffman Stadium") == {"retrieval": 0.0, "format": 0.5, "answer": 1.0, "total": 1.5}
    assert r(GOOD, "Arrowhead")["total"] == 0.0  # -1 + 0.5 + 0.5
    no_docs = GOOD.replace("(1)Kauffman Stadium\nA ballpark.\n", "None\n")  # a search that found nothing
    assert r(no_docs, "Kauffman Stadium")["retrieval"] == 0.0
    assert r(" <think> x </think>\n\n<answer> Kauffman Stadium </answer>", "Kauffman Stadium")["format"] == 0.0
    assert r(" Kauffman Stadium", "Kauffman Stadium") == {"retrieval": 0.0, "format": 0.0, "answer": -1.0,
                                                          "total": -1.0}


def test_count_searches_and_extract_answer():
    assert count_searches(GOOD) == 1 and count_searches(NO_SEARCH) == 0
    assert extract_answer(GOOD) == "Kauffman Stadium"
    assert extract_answer("<answer> open") is None


# ---- advantages -------------------------------------------------------------------------------

def test_group_advantages_hand_computed():
    r = [1.0, 0.0, 0.5, 0.5]
    assert group_advantages(r, 2, "reinforce_pp_baseline") == [0.5, -0.5, 0.0, 0.0]
    g = group_advantages(r, 2, "grpo")  # std (n-1) of {1, 0} = 0.7071
    assert g[0] == pytest.approx(0.5 / 0.70710678, rel=1e-5) and g[2] == 0.0
    with pytest.raises(ValueError):
        group_advantages([1.0, 2.0, 3.0], 2, "grpo")


def test_token_advantages_whitening_and_kl_return():
    masks = [[1, 0, 1], [1, 1, 0]]
    out = token_advantages([1.0, -1.0], masks, "reinforce_pp_baseline")
    vals = [v for row, m in zip(out, masks, strict=True) for v, k in zip(row, m, strict=True) if k]
    assert sum(vals) == pytest.approx(0.0, abs=1e-6)  # whitened over mask-1 tokens
    # KL folded into the return-to-go: token t gets a - beta * sum_{t' >= t} kl_t' (mask-1 tokens only)
    out = token_advantages([1.0], [[1, 0, 1]], "grpo", kl=[[0.5, 9.0, 1.0]], kl_coef=0.1, kl_mode="loss")
    assert out == [[1.0, 1.0, 1.0]]  # kl_mode=loss: KL goes into the loss, not the advantage
    out = token_advantages([1.0], [[1, 0, 1]], "grpo", kl=[[0.5, 9.0, 1.0]], kl_coef=0.1)
    assert out == [[pytest.approx(1 - 0.1 * 1.5), pytest.approx(0.9), pytest.approx(0.9)]]  # group_norm: no whitening
    ret = token_advantages([1.0, 1.0], [[1, 0, 1], [1, 1, 1]], "reinforce_pp_baseline",
                           kl=[[0.5, 9.0, 1.0], [0.0, 0.0, 0.0]], kl_coef=0.1)
    raw = [[1 - 0.1 * 1.5, 1 - 0.1 * 1.0, 1 - 0.1 * 1.0], [1.0, 1.0, 1.0]]
    vals = [raw[0][0], raw[0][2], *raw[1]]
    mu = sum(vals) / 5
    assert ret[0][0] - ret[1][0] == pytest.approx((raw[0][0] - raw[1][0]) / (
        (sum((v - mu) ** 2 for v in vals) / 5) ** 0.5), rel=1e-5)  # OpenRLHF: variance over the tokens (/ n)


# ---- rollout engine ----------------------------------------------------------------------------

class Scripted(LLM):
    """A test double of the LLM interface: replies from a script keyed by round, and records what it saw."""

    backend = "scripted"

    def __init__(self, script):
        super().__init__(sampling={"temperature": 0.0})
        self.script, self.seen = script, []

    def _generate(self, prompts, sampling):
        outs = []
        for p in prompts:
            self.seen.append(p)
            key = p.split("Q:")[1].count("<|begin_of_documents|>")
            text, reason = self.script[p.split("Q:")[1].split("\n")[0]][key]
            outs.append(RequestOutput(index=-1, prompt_tokens=0, completions=[Completion(text, 5, reason)]))
        return outs


@pytest.fixture(scope="module")
def retriever(tmp_path_factory):
    out = tmp_path_factory.mktemp("idx")
    build_index([Passage("0", "Kauffman Stadium", "A ballpark in the Truman Sports Complex."),
                 Passage("1", "Paris", "Capital of France.")], out, ["bm25"])
    return load_retriever(out)


def test_engine_searches_inserts_documents_and_stops(retriever):
    script = {
        "a": [(" need it <|begin_of_query|> Truman Sports Complex ballpark", "stop:" + END_QUERY),
              (" found. </think>\n\n<answer> Kauffman Stadium", "stop:</answer>")],
        "b": [(" easy </think><answer> Paris", "stop:</answer>")],
        "c": [(" <|begin_of_query|> ", "stop:" + END_QUERY)],            # empty query
        "d": [(" rambling on", "length")],
        "e": [(" <|begin_of_query|> France capital", "stop:" + END_QUERY)] * 5,  # never answers
    }
    llm = Scripted(script)
    eng = SearchRolloutEngine(llm, retriever, topk=1, max_searches=2)
    prompts = [f"Q:{k}\n<think>" for k in script]
    rolls = eng.run(list(script), prompts, SamplingParams(temperature=0.0, max_tokens=32))
    a, b, c, d, e = rolls
    assert a.finish == "answer" and a.queries == ["Truman Sports Complex ballpark"]
    assert a.segments[1] == (documents_block(retriever.search_one("Truman Sports Complex ballpark", 1)), False)
    assert "(1)Kauffman Stadium\n" in a.response and a.response.endswith("<answer> Kauffman Stadium</answer>")
    assert get_reward("paper_stage1")(a.response, "x")["total"] == 1.0
    assert b.finish == "answer" and b.num_searches == 0
    assert c.finish == "query_error" and d.finish == "length"
    assert e.finish == "max_searches" and e.num_searches == 2
    # every query of a round goes to the retriever in one call
    assert eng.stats["retrieval_calls"] == 2 and eng.stats["queries"] == 3


class Budgeted(LLM):
    """A backend whose rollouts each want a fixed number of tokens per round (one word per token):
    it stops at `max_tokens` like a real backend, finishing `length`, else ends the round with a query."""

    backend = "budgeted"

    def __init__(self, wants):
        super().__init__(sampling={"temperature": 0.0})
        self.wants, self.calls = wants, []

    def _generate(self, prompts, sampling):
        self.calls.append((len(prompts), sampling.max_tokens))
        outs = []
        for p in prompts:
            want = self.wants[p.split("Q:")[1].split("\n")[0]]
            n = min(want, sampling.max_tokens)
            text = " w" * n + (" <|begin_of_query|> Paris" if n == want else "")
            reason = "stop:" + END_QUERY if n == want else "length"
            outs.append(RequestOutput(index=-1, prompt_tokens=0, completions=[Completion(text, n, reason)]))
        return outs


def test_each_rollout_keeps_its_own_token_budget(retriever):
    """Rollouts sharing generation calls: one that is short of budget must not cut the others short
    (the old engine capped every rollout at the smallest remaining budget and ended them `length`)."""
    wants = {"a": 30, "b": 100, "c": 100}  # tokens per round before each rollout's query
    llm = Budgeted(wants)
    eng = SearchRolloutEngine(llm, retriever, topk=1, max_searches=10, max_tokens_per_round=128,
                              max_response_tokens=128)
    a, b, c = eng.run(list(wants), [f"Q:{k}\n" for k in wants], SamplingParams(temperature=0.0))
    # round 2: b and c have 28 tokens left, a has 98. The old shared cap (28) stopped a after 58
    # tokens as `length`; now a searches 4 times (4 x 30) and ends when its own 128 run out
    assert (a.generated_tokens, a.num_searches, a.finish) == (128, 4, "length")
    assert [(r.generated_tokens, r.num_searches, r.finish) for r in (b, c)] == [(128, 1, "length")] * 2
    # rollouts with the same remaining budget still share one generation call
    assert llm.calls[:3] == [(3, 128), (1, 98), (2, 28)]


def test_engine_reads_tags_when_the_backend_gives_no_stop_string(retriever):
    script = {"a": [(" <|begin_of_query|> Paris", "stop"), (" so </think><answer> Paris", "stop")]}
    rolls = SearchRolloutEngine(Scripted(script), retriever, topk=1).run(["a"], ["Q:a\n"], SamplingParams())
    assert rolls[0].finish == "answer" and rolls[0].queries == ["Paris"]


def _smollm2_tokenizer():
    from transformers import AutoTokenizer

    from rucai.r1searcher.tasks import policy_folder

    try:
        return AutoTokenizer.from_pretrained(policy_folder("smollm2-135m-instruct"))
    except Exception as e:  # noqa: BLE001 - the model package is optional
        pytest.skip(f"SmolLM2 not installed: {e}")


def test_loss_mask_covers_exactly_the_document_tokens(retriever):
    tok = _smollm2_tokenizer()
    script = {"a": [(" look <|begin_of_query|> Truman Sports Complex ballpark", "stop:" + END_QUERY),
                    (" then <|begin_of_query|> France", "stop:" + END_QUERY),
                    (" done </think>\n\n<answer> Kauffman Stadium", "stop:</answer>")]}
    prompt = search_prompt("Q:a", "chat", tok).replace("<|im_start|>user\nQ:a", "<|im_start|>user\nQ:a\n")
    roll = SearchRolloutEngine(Scripted(script), retriever, topk=1).run(["a"], [prompt], SamplingParams())[0]
    assert roll.num_searches == 2
    p_ids, ids, mask = tokenize_rollout(tok, roll)
    assert p_ids == tok(prompt)["input_ids"] and len(ids) == len(mask)
    # the mask-0 tokens decode to exactly the two inserted document blocks, in order
    spans, cur = [], []
    for t, m in zip(ids, mask, strict=True):
        if m == 0:
            cur.append(t)
        elif cur:
            spans.append(cur)
            cur = []
    docs = [s for s, by_model in roll.segments if not by_model]
    assert [tok.decode(s) for s in spans] == docs and len(docs) == 2
    assert all(d.startswith("\n\n<|begin_of_documents|>\n(1)") and d.endswith("<|end_of_documents|>\n\n") for d in docs)
    # and the mask-1 tokens decode to the model's own text
    model_text = tok.decode([t for t, m in zip(ids, mask, strict=True) if m])
    assert model_text == "".join(s for s, by_model in roll.segments if by_model)
    assert sum(mask) < len(mask) and "Kauffman Stadium</answer>" in model_text


def test_hf_backend_reports_the_stop_string(retriever):
    """A real (tiny random) transformers model: the wrapper records which stop string ended a round."""
    from rucai.llm.models import tiny_causal_lm

    model, tok = tiny_causal_lm(seed=1)
    llm = search_hf_llm(model=model, tokenizer=tok, device="cpu")
    outs = llm.generate(["abc"], SamplingParams(temperature=0.0, max_tokens=40))
    text = outs[0].text
    stop = text[3:6]  # a substring greedy decoding will produce
    out = llm.generate(["abc"], SamplingParams(temperature=0.0, max_tokens=40, stop=[stop]))[0].completions[0]
    assert out.finish_reason == "stop:" + stop and out.text == text[: text.find(stop)]
    eng = SearchRolloutEngine(llm, retriever, topk=1, max_rounds=2, max_tokens_per_round=8)
    roll = eng.run(["q"], ["abc"], SamplingParams(temperature=0.0))[0]
    assert roll.finish in {"length", "eos"} and roll.generated_tokens == 8


def test_base_prompt_matches_authors_v0():
    p = search_prompt("Who?", "base")
    assert p.endswith("User:Who?\nAssistant: <think>") and p == BASE_PROMPT.format(question="Who?")
    assert "**A query must involve only a single triple**" in p


def test_chat_demo_is_a_full_reward_example_placed_before_the_question():
    """The worked example of `chat_demo` earns the stage-1 reward it demonstrates (a search + a
    well-formed answer) and sits as an earlier turn, so the prompt still ends in the question + <think>."""
    demo_q, demo_a = CHAT_DEMO
    assert demo_a.startswith("<think>")
    r = get_reward("paper_stage1")(demo_a[len("<think>"):], "Cincinnati")
    assert r == {"retrieval": 0.5, "format": 0.5, "answer": 0.0, "total": 1.0}
    assert get_reward("paper_stage2")(demo_a[len("<think>"):], "Cincinnati")["total"] == 1.0
    tok = _smollm2_tokenizer()
    p, plain = search_prompt("Who built it?", "chat_demo", tok), search_prompt("Who built it?", "chat", tok)
    assert p.endswith("Who built it?<|im_end|>\n<|im_start|>assistant\n<think>") and p != plain
    assert p.index(demo_q) < p.index(demo_a) < p.index("Who built it?")
    with pytest.raises(ValueError, match="chat_demo"):
        search_prompt("Who?", "chatty", tok)
# ---- method settings: typed at compose time, values checked in one line ------------------------------

SMOKE = ("experiment=r1searcher/smollm2", "debug=smoke")


def test_method_defaults_are_the_authors_qwen_recipe():
    from rucai.r1searcher.config import R1SearcherMethod

    m = R1SearcherMethod()
    assert m.prompt_style == "base" and m.tiny_policy is None
    for s in (m.stage1, m.stage2):
        assert (s.algo, s.n_samples, s.lr, s.temperature, s.kl_coef, s.topk, s.max_searches) == \
            ("reinforce_pp_baseline", 16, 2e-6, 1.0, 0.0, 3, 8)
    assert (m.stage1.reward, m.stage2.reward) == ("paper_stage1", "qwen_base_stage2")
    assert (m.eval.topk, m.eval.max_rounds, m.eval.max_tokens, m.eval.limit) == (5, 9, 512, None)


def test_smoke_overlay_comes_from_the_papers_debug_file():
    cfg = compose_config(*SMOKE)
    m = cfg.method
    assert m.tiny_policy.hidden == 32 and m.tiny_policy.layers == 2
    assert m.stage1.steps == m.stage2.steps == 1 and m.eval.limit == 2
    assert list(m.eval.sets) == ["hotpotqa_500", "bamboogle"]
    plain = compose_config("experiment=r1searcher/smollm2").method
    assert plain.tiny_policy is None and plain.stage1.steps == 6 and plain.eval.limit == 20


@pytest.mark.parametrize("exp", ["smollm2", "qwen25_7b_base", "llama31_8b_instruct"])
def test_misspelled_method_key_fails_at_compose(exp):
    from hydra.errors import ConfigCompositionException

    for bad in ("method.stage1.stepz=3", "method.retriever.servise=http", "method.promptstyle=chat"):
        with pytest.raises(ConfigCompositionException):
            compose_config(f"experiment=r1searcher/{exp}", bad)
    with pytest.raises(ConfigCompositionException):  # wrong type
        compose_config(f"experiment=r1searcher/{exp}", "method.stage1.steps=many")


@pytest.mark.parametrize("override,message", [
    ("method.prompt_style=chatty", "method.prompt_style='chatty'; valid: base, chat, chat_demo"),
    ("method.stage1.algo=ppo", "method.stage1.algo='ppo'; valid: reinforce_pp_baseline, grpo"),
    ("method.stage2.n_samples=0", "method.stage2.n_samples=0 must be >= 1"),
    ("method.stage1.reward=nope", "method.stage1.reward='nope'; valid:"),
    ("method.retriever.service=ftp", "method.retriever.service='ftp'; valid: inprocess, http, url"),
    ("method.eval.modes=[rag,oracle]", "method.eval.modes: 'oracle' is not a mode"),
    ("method.stage=stage3", "method.stage='stage3'; valid: stage1, stage2"),
])
def test_bad_values_are_one_line_user_errors(override, message):
    from rucai.errors import UserError
    from rucai.r1searcher.config import check

    with pytest.raises(UserError) as e:
        check(compose_config(*SMOKE, override).method)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_cli_typo_and_bad_value_are_one_error_line(tmp_path):
    for args in (("method.stage1.stepz=3",), ("method.stage1.algo=ppo",)):
        r = run_cli(*SMOKE, *args, run_dir=tmp_path / args[0].replace("=", "_"), timeout=300)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), r.stderr[-2000:]
        assert args[0].split("=")[0].split(".")[-1] in lines[0]


# ---- Fabric strategies: runtime.fabric keeps every setting of the hardware profile ----------------------

@pytest.mark.parametrize("profile", ["deepspeed_stage_2", "deepspeed_stage_3_offload", "fsdp", "ddp"])
def test_runtime_fabric_gets_the_profiles_strategy(profile, monkeypatch):
    """What `train_stage` gets from `runtime.fabric(hardware, max_grad_norm)`: the Fabric class of the
    profile's strategy with its settings (no GPU needed: the Fabric constructor is captured)."""
    if profile.startswith("deepspeed"):
        pytest.importorskip("deepspeed")
    import lightning as L
    from omegaconf import OmegaConf

    from rucai import runtime
    from rucai.runtime import hardware

    hw = compose_config(f"hardware={profile}").hardware
    conf = OmegaConf.to_container(hw.strategy)
    direct = hardware.build_strategy(hw, "fabric")
    seen = {}
    monkeypatch.setattr(hardware, "check", lambda hw, n_gpus=None: None)  # no GPU here
    monkeypatch.setattr(L, "Fabric", lambda **kw: seen.update(kw) or "fabric")
    assert runtime.fabric(hw, max_grad_norm=0.5) == "fabric"
    s = seen["strategy"]
    assert (seen["accelerator"], seen["precision"]) == ("gpu", "bf16-mixed")
    for obj in (s, direct):
        assert type(obj).__module__.startswith("lightning.fabric.strategies.")
        assert type(obj).__name__ == conf["_target_"].rsplit(".", 1)[1]
    if profile.startswith("deepspeed"):
        zero = s.config["zero_optimization"]
        assert zero["stage"] == conf["stage"]
        assert (zero.get("offload_optimizer") or {}).get("device") == ("cpu" if conf["offload_optimizer"] else None)
        assert (zero.get("offload_param") or {}).get("device") == ("cpu" if conf["offload_parameters"] else None)
        assert s.config["gradient_clipping"] == 0.5  # DeepSpeed clips inside its step
        if conf.get("pin_memory"):
            assert zero["offload_optimizer"]["pin_memory"] is True
    elif profile == "fsdp":
        assert s.sharding_strategy.name == conf["sharding_strategy"] == "FULL_SHARD"
        assert s._state_dict_type == conf["state_dict_type"]
        assert (s.cpu_offload is not None and s.cpu_offload.offload_params) == conf["cpu_offload"]
    else:
        assert s._ddp_kwargs == {"find_unused_parameters": conf["find_unused_parameters"]}


# ---- step checkpoints and resume ------------------------------------------------------------------------

def _train_cfg(out, *extra):
    # a short prompt (chat) and tiny rollouts: a step takes seconds with the tiny smoke policy
    return compose_config(*SMOKE, "task=r1searcher.train", "method.prompt_style=chat",
                          "method.stage1.steps=4", "method.stage1.checkpoint_every=1",
                          "method.stage1.prompts_per_step=2", "method.stage1.max_tokens_per_round=8",
                          "method.stage1.max_response_tokens=8", f"paths.output_dir={out}",
                          f"paths.data_dir={DATA_DIR}", *extra)


def _steps(run):
    import csv

    rows = list(csv.DictReader(open(run / "stage1" / "rewards.csv", encoding="utf-8")))
    samples = [json.loads(x) for x in (run / "stage1" / "rollouts.jsonl").read_text().splitlines()]
    return [int(r["step"]) for r in rows], samples


def test_step_checkpoint_round_trip_and_log_truncation(tmp_path):
    """save_checkpoint (fabric.save + rename over last.ckpt) restores model, optimizer and the plain
    state; _truncate_logs drops the rows of steps after the checkpoint."""
    import random

    import torch

    from rucai import runtime
    from rucai.r1searcher import rl

    fabric = runtime.fabric(compose_config("hardware=cpu").hardware)

    def make():
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 2)
        return fabric.setup(model, torch.optim.AdamW(model.parameters(), lr=0.1))

    model, opt = make()
    for _ in range(2):
        opt.zero_grad()
        fabric.backward(model(torch.ones(4, 3)).sum())
        opt.step()
    rng = random.Random(7)
    rng.random()
    path = tmp_path / "stage1" / "checkpoints" / "last.ckpt"
    for step in (1, 2):  # the second save replaces the first, leaving no .tmp / .old behind
        rl.save_checkpoint(fabric, path, {"model": model, "optimizer": opt, "step": step, "order": [5, 3],
                                          "data_rng": rng.getstate(), "history": [{"step": step}]})
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]
    model2, opt2 = make()
    state = {"model": model2, "optimizer": opt2, "step": 0, "order": [], "data_rng": None, "history": []}
    fabric.load(path, state, weights_only=False)
    assert state["step"] == 2 and state["order"] == [5, 3] and state["history"] == [{"step": 2}]
    assert torch.equal(model2.weight, model.weight)
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    r2 = random.Random()
    r2.setstate(state["data_rng"])
    assert r2.random() == rng.random()

    from rucai.utils.io import append_csv_row

    csv_path, samples = tmp_path / "rewards.csv", tmp_path / "rollouts.jsonl"
    for step in (1, 2, 3):
        append_csv_row(csv_path, {"stage": "stage1", "step": step, "reward/total": 0.5})
        with open(samples, "a") as f:
            f.write(json.dumps({"step": step, "question": "q"}) + "\n" + json.dumps({"step": step}) + "\n")
    rl._truncate_logs(csv_path, samples, 2)
    assert csv_path.read_text().splitlines() == ["stage,step,reward/total", "stage1,1,0.5", "stage1,2,0.5"]
    assert [json.loads(x)["step"] for x in samples.read_text().splitlines()] == [1, 1, 2, 2]


@pytest.mark.slow
@needs_data("multihop_qa", "r1searcher_stage1_train.jsonl")
def test_rl_stage_resumes_from_its_step_checkpoint(tmp_path, monkeypatch):
    """Killed after step 3's row was written but before its checkpoint: ckpt_path=last continues from
    step 2's checkpoint (model, optimizer, RNG, data order), drops the orphan row, runs 3 and 4 once."""
    import random

    from rucai import runtime
    from rucai.r1searcher import rl
    from rucai.r1searcher.tasks import train

    run = tmp_path / "run"
    real = rl.append_csv_row

    def killed_after_step_3(path, row):
        real(path, row)
        if row["step"] == 3:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(rl, "append_csv_row", killed_after_step_3)
    saved = []
    real_save = rl.save_checkpoint
    monkeypatch.setattr(rl, "save_checkpoint", lambda f, p, state: saved.append(state["step"]) or real_save(f, p, state))
    try:
        with pytest.raises(KeyboardInterrupt):
            train(_train_cfg(run))
    finally:
        runtime.close_loggers("failed")
    assert saved == [1, 2] and (run / "stage1" / "checkpoints" / "last.ckpt").exists()
    assert not (run / "stage1" / "done.json").exists()
    assert _steps(run)[0] == [1, 2, 3]

    monkeypatch.setattr(rl, "append_csv_row", real)
    try:
        metrics = train(_train_cfg(run, "ckpt_path=last"))
    finally:
        runtime.close_loggers()
    done = json.loads((run / "stage1" / "done.json").read_text())["result"]
    assert done["resumed_after_step"] == 2 and done["steps"] == 4
    steps, samples = _steps(run)
    assert steps == [1, 2, 3, 4]  # step 3 once (the orphan row of the killed attempt was dropped)
    assert [s["step"] for s in samples] == [k for k in (1, 2, 3, 4) for _ in range(2 * 2)]
    # the data order continued: step k drew the k-th slice of the seed's permutation
    rows = [json.loads(x) for x in (DATA_DIR / "multihop_qa" / "r1searcher_stage1_train.jsonl").read_text().splitlines()]
    perm = list(range(len(rows)))
    random.Random(42).shuffle(perm)
    for k in (1, 2, 3, 4):
        want = [rows[i]["question"] for i in perm[2 * (k - 1):2 * k] for _ in range(2)]
        assert [s["question"] for s in samples if s["step"] == k] == want
    assert (run / "stage1" / "policy" / "config.json").is_file()
    assert not (run / "stage1" / "checkpoints" / "last.ckpt").exists()  # the policy replaces it
    assert metrics["policy"] == str(run / "stage1" / "policy")
    # a rerun reuses the finished stage: same result, no new training rows
    rows_before = (run / "stage1" / "rewards.csv").read_text()
    try:
        again = train(_train_cfg(run))
    finally:
        runtime.close_loggers()
    assert again == metrics and (run / "stage1" / "rewards.csv").read_text() == rows_before


def _train_until(run, steps: int, checkpoint_every: int, path) -> tuple[list[str], subprocess.Popen]:
    """Start `r1searcher.train` (smoke sizes, `steps` steps) in its own process group and wait until
    `path` (relative to the run dir) exists; returns its arguments (without the run dir) and the process."""
    args = [*SMOKE, "task=r1searcher.train", "method.prompt_style=chat", f"method.stage1.steps={steps}",
            f"method.stage1.checkpoint_every={checkpoint_every}", "method.stage1.max_tokens_per_round=8",
            "method.stage1.max_response_tokens=8"]
    env = os.environ | {"RUCAI_DATA_DIR": str(DATA_DIR)}
    p = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args, f"hydra.run.dir={run}"], cwd=ROOT, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    t0 = time.time()
    while not (run / path).exists() and p.poll() is None and time.time() - t0 < 600:
        time.sleep(0.1)
    assert (run / path).exists(), f"{path} never appeared"
    return args, p


@pytest.mark.slow
@needs_data("multihop_qa", "r1searcher_stage1_train.jsonl")
def test_sigkilled_stage_resumes_under_ckpt_path_last(tmp_path):
    """The real thing: SIGKILL the run once a step checkpoint exists, rerun with ckpt_path=last."""
    run = tmp_path / "run"
    args, p = _train_until(run, 3, 1, "stage1/checkpoints/last.ckpt")
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    r = run_cli(*args, "ckpt_path=last", run_dir=run, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    done = json.loads((run / "stage1" / "done.json").read_text())["result"]
    assert done["resumed_after_step"] >= 1
    assert _steps(run)[0] == [1, 2, 3]


@pytest.mark.slow
@needs_data("multihop_qa", "r1searcher_stage1_train.jsonl")
def test_sigterm_checkpoints_the_step_in_flight_and_resumes(tmp_path):
    """SLURM's pre-emption / pre-timeout signal mid-step: the step in flight ends, a checkpoint is
    saved although checkpoint_every is far away, the run records `interrupted`, and the rerun with
    ckpt_path=last continues after that step."""
    run = tmp_path / "run"
    args, p = _train_until(run, 4, 100, "stage1/rewards.csv")
    os.killpg(p.pid, signal.SIGTERM)
    assert p.wait(timeout=300) == 128 + signal.SIGTERM
    assert (run / "stage1" / "checkpoints" / "last.ckpt").exists()
    assert json.loads((run / "metrics.json").read_text())["status"] == "interrupted"
    r = run_cli(*args, "ckpt_path=last", run_dir=run, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    done = json.loads((run / "stage1" / "done.json").read_text())["result"]
    assert 1 <= done["resumed_after_step"] < 4
    assert _steps(run)[0] == [1, 2, 3, 4]


# ---- the smoke pipeline ---------------------------------------------------------------------------------

@pytest.mark.slow  # tests/test_smoke.py runs the same smoke experiment in the default set
@needs_data("multihop_qa", "r1searcher_stage1_train.jsonl")
def test_smoke_pipeline_hands_stage1_weights_to_stage2(tmp_path):
    run = tmp_path / "run"
    r = run_cli(*SMOKE, "logger=wandb", run_dir=run, timeout=600, env={"WANDB_MODE": "offline"})
    assert r.returncode == 0, r.stderr[-3000:]
    m = r.metrics()
    assert m["status"] == "completed" and m["task"] == "r1searcher.pipeline"
    s1 = json.loads((run / "stage1" / "done.json").read_text())["result"]
    s2 = json.loads((run / "stage2" / "done.json").read_text())["result"]
    assert s2["init_from"] == s1["policy"] == str(run / "stage1" / "policy")
    assert (run / "stage2" / "policy" / "config.json").is_file()
    assert (run / "eval" / "done.json").is_file()
    header = (run / "stage1" / "rewards.csv").read_text().splitlines()[0]
    assert {"reward/total", "reward/retrieval", "reward/format", "reward/answer", "searches/mean"} <= set(header.split(","))
    res = (run / "eval" / "results.csv").read_text()
    for name in ("hotpotqa_500", "bamboogle"):  # the smoke overlay's eval sets
        for mode in ("r1searcher", "rag", "naive"):
            assert f"{mode},{name}" in res
            assert 0.0 <= m[f"eval/{mode}/{name}/cover_em"] <= 1.0
    assert sorted((run / "wandb").glob("offline-run-*")), "logger=wandb left no offline run"
    # a rerun in the same dir reuses every stage
    r2 = run_cli(*SMOKE, run_dir=run, timeout=600)
    assert r2.returncode == 0, r2.stderr[-3000:]
    log = (run / "run.log").read_text()
    assert all(f"stage {s}: reusing" in log for s in ("stage1", "stage2", "eval"))
    assert r2.metrics()["eval/rag/bamboogle/f1"] == m["eval/rag/bamboogle/f1"]


# ---- recipes as released (issue 13 item 3): Llama stage-2 reward, KL in the reward, update schedule -----

def test_llama_stage2_released_server_on_hand_strings():
    """train/reward_server_llama_stage2.py: F1 (0 without both answer tags), -1 when malformed; unlike the
    Qwen server no answer-length, `Assistant` or answer-position check, and -1 instead of -2."""
    llama, qwen = get_reward("llama_stage2"), get_reward("qwen_base_stage2")
    assert llama(GOOD, "Kauffman Stadium") == {"retrieval": 0.0, "format": 0.0, "answer": 1.0, "total": 1.0}
    assert llama("<answer> Kauffman Stadium </answer>", "Kauffman Stadium")["total"] == 0.0  # no </think>: 1 - 1
    assert qwen("<answer> Kauffman Stadium </answer>", "Kauffman Stadium")["total"] == -1.0  # 1 - 2
    long = " I know it. </think>\n\n<answer> Kauffman Stadium which is a ballpark in the Truman Sports Complex " \
           "of Kansas City </answer>"
    # 12 normalised answer words ("a", "the" dropped), 2 of them gold: P 1/6, R 1, F1 = 2/7
    assert llama(long, "Kauffman Stadium")["total"] == pytest.approx(2 / 7)
    assert qwen(long, "Kauffman Stadium")["total"] == pytest.approx(2 / 7 - 2)  # > 10 words: malformed there
    assistant = NO_SEARCH.replace("I know it.", "Assistant knows it.")
    assert llama(assistant, "Kauffman Stadium")["total"] == 1.0 and qwen(assistant, "Kauffman Stadium")["total"] == -1.0
    assert llama(" I know. </think>", "Kauffman Stadium")["total"] == -1.0  # no answer: F1 0, malformed
    none_docs = GOOD.replace("(1)Kauffman Stadium\nA ballpark.\n", "None\n")
    assert llama(none_docs, "Kauffman Stadium")["total"] == 0.0  # a `None` block is not `(1)`: 1 - 1
    chinese = NO_SEARCH.replace("I know it.", "我知道")
    assert llama(chinese, "Kauffman Stadium")["total"] == 0.0


def test_kl_folded_into_the_reward_for_group_norm_hand_computed():
    """OpenRLHF group_norm with --init_kl_coef (the authors' Llama stage 1): group-normalised reward at the
    last token, -beta * k1 KL on every response token, returns-to-go, no whitening."""
    from rucai.r1searcher.rl import kl_k1

    seq = group_advantages([1.0, 0.0], 2, "grpo")  # (r - 0.5) / (std_{n-1} 0.70711 + 1e-9)
    assert seq == [pytest.approx(0.70710678), pytest.approx(-0.70710678)]
    lp = [[-1.0, -2.0, -0.5], [-0.3, -0.7, -1.2]]
    ref = [[-1.5, -2.0, -0.1], [-0.3, -0.2, -1.0]]
    masks = [[1, 0, 1], [1, 1, 1]]  # the middle token of rollout 0 is a document token
    kl = kl_k1(lp, ref)
    assert kl == [[pytest.approx(0.5), 0.0, pytest.approx(-0.4)], [0.0, pytest.approx(-0.5), pytest.approx(-0.2)]]
    out = token_advantages(seq, masks, "grpo", kl, kl_coef=0.1)
    a = 0.70710678
    want = [[a - 0.05 + 0.04, a + 0.04, a + 0.04], [-a + 0.05 + 0.02, -a + 0.05 + 0.02, -a + 0.02]]
    for row, w in zip(out, want, strict=True):
        assert row == [pytest.approx(x, abs=1e-7) for x in w]
    # the k3-as-loss option leaves the advantage alone (the previous grpo behaviour)
    assert token_advantages(seq, masks, "grpo", kl, kl_coef=0.1, kl_mode="loss") == [[seq[0]] * 3, [seq[1]] * 3]


def test_policy_loss_clips_and_averages_per_rollout_by_hand():
    import math

    import torch

    from rucai.r1searcher.rl import policy_loss

    lp = torch.tensor([[math.log(0.6), math.log(0.5)], [math.log(0.3), 0.0]])
    old = torch.tensor([[math.log(0.4), math.log(0.5)], [math.log(0.3), 0.0]])
    adv = torch.tensor([[1.0, -1.0], [2.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    # rollout 0: ratios 1.5 (clipped to 1.2 for A > 0) and 1 -> losses -1.2, +1.0, mean -0.1; rollout 1: -2
    loss, ratio = policy_loss(lp, old, adv, mask, 0.2, "seq_mean")
    assert ratio[0].tolist() == [pytest.approx(1.5), pytest.approx(1.0)]
    assert float(loss) == pytest.approx((-0.1 + -2.0) / 2)
    loss, _ = policy_loss(lp, old, adv, mask, 0.2, "token_mean")
    assert float(loss) == pytest.approx((-1.2 + 1.0 - 2.0) / 3)
    assert float(policy_loss(lp, old, adv, mask, 0.2, "seq_mean", denom=4)[0]) == pytest.approx(-2.1 / 4)


def test_minibatch_schedule_shuffles_each_epoch_and_cuts_train_batches():
    from rucai.r1searcher.rl import minibatches

    s = minibatches(8, 4, 2, seed=3)
    assert len(s) == 4 and all(len(b) == 4 for b in s)
    assert sorted(s[0] + s[1]) == sorted(s[2] + s[3]) == list(range(8))  # each epoch covers every rollout once
    assert s == minibatches(8, 4, 2, seed=3) and s != minibatches(8, 4, 2, seed=4)
    assert minibatches(8, None, 1, seed=3) == [list(range(8))]
    with pytest.raises(ValueError):
        minibatches(8, 3, 1, seed=0)


def _tag_policy(root):
    """A random tiny Llama on a word-level tokenizer in which the query tag is one token (so a random
    policy writes it in some rollouts and the rewards of one prompt differ)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from rucai.r1searcher.prompts import BEGIN_QUERY, END_ANSWER
    from rucai.r1searcher.tasks import tiny_policy

    words = ["<unk>", "<pad>", "</s>", BEGIN_QUERY, *[f"w{i}" for i in range(12)], END_QUERY, END_ANSWER, "abcdef"]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token="<pad>", eos_token="</s>")
    tok.save_pretrained(root / "tokenizer")
    return tiny_policy(str(root / "tokenizer"), root / "cache", hidden=32, layers=2)


def _query_tag_reward(response: str, golds, prompt_opens_think: bool = True) -> dict[str, float]:
    from rucai.r1searcher.prompts import BEGIN_QUERY

    hit = 1.0 if BEGIN_QUERY in response else 0.0
    return {"retrieval": hit, "format": 0.0, "answer": 0.0, "total": hit}


@pytest.mark.parametrize("algo,kl_coef", [("reinforce_pp_baseline", 0.0), ("grpo", 1e-4)])
def test_rollout_batch_then_clipped_minibatch_updates(tmp_path, monkeypatch, algo, kl_coef):
    """The real train_stage: 16 rollouts, then 2 epochs x 4 minibatches of 4 = 8 updates, the ratio against
    the rollout-time log-probs, so it leaves 1 (and clips) after the first update; one update per batch
    (train_batch_size null) keeps it at exactly 1."""
    import csv

    from rucai.r1searcher import rewards
    from rucai.r1searcher.config import RLStageConfig
    from rucai.r1searcher.rl import train_stage

    monkeypatch.setitem(rewards.REWARDS, "test_query_tag", _query_tag_reward)
    policy = _tag_policy(tmp_path)
    questions = [{"question": "w1 w2 w3", "answer": "w4"}, {"question": "w5 w6", "answer": "w7"}]
    rows = {}
    for tbs, epochs in ((4, 2), (None, 1)):
        s = RLStageConfig(data="-", reward="test_query_tag", algo=algo, kl_coef=kl_coef, steps=2, prompts_per_step=2,
                          n_samples=8, train_batch_size=tbs, max_epochs=epochs, lr=5e-2, micro_batch_size=16,
                          max_tokens_per_round=4, max_response_tokens=4, gradient_checkpointing=False,
                          checkpoint_every=0)
        out = tmp_path / f"tbs{tbs}"
        train_stage(policy, out, questions, None, s, hardware=compose_config("hardware=cpu").hardware,
                    prompt_style="base", seed=0)
        with open(out / "rewards.csv", newline="", encoding="utf-8") as f:
            rows[tbs] = list(csv.DictReader(f))
    assert [int(r["updates"]) for r in rows[4]] == [8, 8] and [int(r["updates"]) for r in rows[None]] == [1, 1]
    assert max(float(r["ratio/max_abs_dev"]) for r in rows[4]) > 0.2  # beyond clip_eps: the clip acts
    assert max(float(r["ratio/clip_frac"]) for r in rows[4]) > 0.0
    assert all(float(r["ratio/max_abs_dev"]) == 0.0 for r in rows[None])


@pytest.mark.parametrize("exp", ["qwen25_7b_base", "llama31_8b_instruct", "smollm2"])
def test_released_recipes_compose(exp):
    """The experiments' method settings, as Hydra composes them, are the released scripts'."""
    from rucai.r1searcher.config import check

    cfg = compose_config(f"experiment=r1searcher/{exp}")
    m = cfg.method
    check(m)
    s1, s2 = m.stage1, m.stage2
    assert s1.top_p == s2.top_p == 0.95  # the authors' rollout SamplingParams
    assert s1.kl_mode == s2.kl_mode == "reward" and s1.loss_agg == s2.loss_agg == "seq_mean"
    if exp == "smollm2":  # the CPU stand-in: one update per rollout batch, BM25 over the dev pool
        assert s1.train_batch_size is None and s2.train_batch_size is None
        assert (m.retriever.kind, m.retriever.source) == ("bm25", "hotpotqa_contexts")
        return
    assert cfg.hardware.name == "deepspeed_stage_2" and cfg.hardware.strategy.stage == 2
    r = m.retriever
    assert (r.kind, list(r.kinds), r.encoder, r.source) == ("dense", ["dense"], "bge-large-en-v1.5", "r1searcher_tsv")
    assert r.input.endswith("/wiki/hotpotqa_abstracts.tsv")
    got = [(s.algo, s.reward, s.kl_coef, s.prompts_per_step, s.n_samples, s.train_batch_size, s.max_epochs, s.lr)
           for s in (s1, s2)]
    if exp == "qwen25_7b_base":  # scripts/qwen_reinforce_plus_train.sh: RBS 64, TBS 256, KL 0
        assert got == [("reinforce_pp_baseline", "paper_stage1", 0.0, 64, 16, 256, 1, 2e-6),
                       ("reinforce_pp_baseline", "qwen_base_stage2", 0.0, 64, 16, 256, 1, 2e-6)]
    else:  # scripts/llama_reinforce_plus_train_stage{1,2}.sh: group_norm RBS 15 TBS 60, reinforce RBS 65 TBS 260
        assert got == [("grpo", "llama_stage1", 1e-4, 15, 16, 60, 1, 2e-6),
                       ("reinforce_pp_baseline", "llama_stage2", 1e-4, 65, 16, 260, 1, 2e-6)]


def test_train_batch_size_must_divide_the_rollout_batch():
    from rucai.errors import UserError
    from rucai.r1searcher.config import check

    with pytest.raises(UserError) as e:
        check(compose_config(*SMOKE, "method.stage1.train_batch_size=3").method)
    assert str(e.value) == ("method.stage1.train_batch_size=3 must divide prompts_per_step x n_samples = 4 "
                            "(or null: one update per rollout batch)")
    with pytest.raises(UserError, match="method.stage2.kl_mode='k3'; valid: reward, loss"):
        check(compose_config(*SMOKE, "method.stage2.kl_mode=k3").method)


def test_a_rollout_ended_by_eos_trains_on_the_eos_token(retriever):
    """EOS is a loss token when the model stopped with it (as the authors' vLLM token ids), not otherwise."""
    tok = _smollm2_tokenizer()
    prompt = search_prompt("Q:a", "chat", tok).replace("<|im_start|>user\nQ:a", "<|im_start|>user\nQ:a\n")
    for finish, text in (("eos", " I give up"), ("length", " I give up and")):
        script = {"a": [(text, finish if finish == "length" else "stop")]}
        roll = SearchRolloutEngine(Scripted(script), retriever, topk=1).run(["a"], [prompt], SamplingParams())[0]
        assert roll.finish == finish
        _, ids, mask = tokenize_rollout(tok, roll)
        body = tok(text, add_special_tokens=False)["input_ids"]
        if finish == "eos":
            assert ids == body + [tok.eos_token_id] and mask == [1] * (len(body) + 1)
        else:
            assert ids == body and mask == [1] * len(body)
