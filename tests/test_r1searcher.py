"""R1-Searcher: rewards on hand-made responses, advantages, the rollout engine and its loss mask."""

import json

import pytest

from rucai.llm.base import LLM, Completion, RequestOutput, SamplingParams
from rucai.r1searcher.prompts import BASE_PROMPT, CHAT_DEMO, END_QUERY, extract_answer, search_prompt
from rucai.r1searcher.rewards import REWARDS, count_searches, format_ok, get_reward, strict_format_ok
from rucai.r1searcher.rl import group_advantages, token_advantages
from rucai.r1searcher.rollout import SearchRolloutEngine, documents_block, search_hf_llm, tokenize_rollout
from rucai.retrieval import Passage, load_retriever
from rucai.retrieval.index import build_index
from tests.conftest import needs_data, run_cli

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
    assert q(" Assistant: </think><answer> a </answer>", "a")["total"] == -1.0   # 'Assistant' in the response
    assert not strict_format_ok(" 北京 </think><answer> a </answer>")
    assert strict_format_ok(" </think><answer> a </answer>" .replace("a </", "a </"))
    cem = get_reward("llama_stage1_cem")
    assert cem(" </think><answer> it is Kauffman Stadium </answer>", "Kauffman Stadium")["total"] == 1.0
    assert cem(" </think><answer> Arrowhead </answer>", "Kauffman Stadium")["total"] == -1.0
    assert cem(" Kauffman Stadium", "Kauffman Stadium")["total"] == -1.0  # no answer tag
    assert set(REWARDS) >= {"paper_stage1", "paper_stage2", "qwen_base_stage2", "llama_stage1_cem"}


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
    out = token_advantages([1.0], [[1, 0, 1]], "grpo", kl=[[0.5, 9.0, 1.0]], kl_coef=0.1)
    assert out == [[1.0, 1.0, 1.0]]  # grpo: KL goes into the loss, not the advantage
    ret = token_advantages([1.0, 1.0], [[1, 0, 1], [1, 1, 1]], "reinforce_pp_baseline",
                           kl=[[0.5, 9.0, 1.0], [0.0, 0.0, 0.0]], kl_coef=0.1)
    raw = [[1 - 0.1 * 1.5, 1 - 0.1 * 1.0, 1 - 0.1 * 1.0], [1.0, 1.0, 1.0]]
    vals = [raw[0][0], raw[0][2], *raw[1]]
    mu = sum(vals) / 5
    assert ret[0][0] - ret[1][0] == pytest.approx((raw[0][0] - raw[1][0]) / (
        (sum((v - mu) ** 2 for v in vals) / 4) ** 0.5), rel=1e-5)


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
    from rucai.errors import UserError
    from rucai.r1searcher.tasks import _stage_cfg

    with pytest.raises(UserError, match="method.prompt_style='chatty'; valid: base, chat, chat_demo"):
        _stage_cfg({"prompt_style": "chatty", "stage1": {}}, "stage1", False, 0)


@pytest.mark.slow  # tests/test_smoke.py runs the same smoke experiment in the default set
@needs_data("multihop_qa", "r1searcher_stage1_train.jsonl")
def test_smoke_pipeline_hands_stage1_weights_to_stage2(tmp_path):
    r = run_cli("experiment=r1searcher/smollm2", "debug=smoke", run_dir=tmp_path / "run", timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "run"
    m = r.metrics()
    assert m["status"] == "completed" and m["task"] == "r1searcher.pipeline"
    s1 = json.loads((run / "stage1" / "summary.json").read_text())
    s2 = json.loads((run / "stage2" / "summary.json").read_text())
    assert s2["init_from"] == s1["policy"] == str(run / "stage1" / "policy")
    assert (run / "stage2" / "policy" / "config.json").is_file()
    header = (run / "stage1" / "rewards.csv").read_text().splitlines()[0]
    assert {"reward/total", "reward/retrieval", "reward/format", "reward/answer", "searches/mean"} <= set(header.split(","))
    res = (run / "eval" / "results.csv").read_text()
    for name in ("hotpotqa_500", "bamboogle"):  # method.smoke.eval_sets
        for mode in ("r1searcher", "rag", "naive"):
            assert f"{mode},{name}" in res
            assert 0.0 <= m[f"eval/{mode}/{name}/cover_em"] <= 1.0
