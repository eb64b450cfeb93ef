"""GRSU's simulator scoring, beam search and candidate ranking on hand cases."""

import math
import random

import pytest

from rucai.grsu.search import rank_candidates, search
from rucai.grsu.simulator import RandomScorer, Simulator, yes_no_score


def test_yes_no_score_from_known_logits():
    # P(Yes) = .7, P(No) = .2: answers Yes -> .7
    assert yes_no_score(math.log(0.7), math.log(0.2)) == pytest.approx(0.7)
    # P(Yes) = .1, P(No) = .6: answers No -> 1 - .6
    assert yes_no_score(math.log(0.1), math.log(0.6)) == pytest.approx(0.4)
    # from raw logits over a 4-token vocabulary: softmax then the rule
    logits = {"Yes": 2.0, "No": 1.0, "a": 0.0, "b": 0.0}
    z = math.log(sum(math.exp(v) for v in logits.values()))
    want = math.exp(2.0 - z)
    assert yes_no_score(2.0 - z, 1.0 - z) == pytest.approx(want)


class CountingLLM:
    """Returns fixed next-token log-probs per item title and counts the prompts it scores."""

    def __init__(self, p_yes):
        self.p_yes, self.prompts = p_yes, 0

    def next_token_logprobs(self, prompts, candidates):
        assert candidates == ["Yes", "No"]
        self.prompts += len(prompts)
        out = []
        for p in prompts:
            title = p[-1]["content"].split("suggests: ")[1].split(".\n")[0]
            y = self.p_yes[title]
            out.append({"Yes": math.log(y), "No": math.log(1 - y - 0.01)})
        return out


def test_simulator_scores_are_cached_per_turn_and_item():
    llm = CountingLLM({"A (2001)": 0.9, "B (2002)": 0.3, "C (2003)": 0.6})
    sim = Simulator(llm, {1: "A (2001)", 2: "B (2002)", 3: "C (2003)"})
    assert sim.score("t1", "hi", [1, 2]) == pytest.approx([0.9, 1 - 0.69])
    assert llm.prompts == 2
    assert sim.score("t1", "hi", [2, 3, 1]) == pytest.approx([0.31, 0.6, 0.9])
    assert llm.prompts == 3 and sim.score_calls == 3  # only item 3 was new
    sim.score("t2", "other turn", [1])
    assert llm.prompts == 4  # another turn: scored again
    r = RandomScorer(seed=0)
    a = r.score("t", "", [5, 6, 5])
    assert a[0] == a[2] and r.score_calls == 2


def make_crs():
    """Proposals numbered in creation order: proposal j = items [10j, 10j + 1]."""
    made = []

    def propose(dialogue, rounds, n, rng):
        out = []
        for _ in range(n):
            j = len(made)
            made.append(len(rounds))
            out.append([10 * j, 10 * j + 1])
        return out

    return propose, made


def test_beam_search_keeps_the_top_children_and_respects_depth_and_width():
    propose, made = make_crs()
    reward = {}

    def score(turn, dialogue, items):
        rng = random.Random(items[0])  # a fixed pseudo-random reward per item
        return [reward.setdefault(i, rng.random()) for i in items]

    critiques = []

    def critique(dialogue, items):
        critiques.append(tuple(items))
        return f"not {items[0]}"

    res = search("t", "d", propose, score, critique, beams=2, depth=3, expand=3, root=5)
    assert len(res.kept) == 4 and all(len(k) == 2 for k in res.kept)
    assert len(res.nodes) == 5 + 3 * (2 * 3)
    assert made == [0] * 5 + [1] * 6 + [2] * 6 + [3] * 6  # rounds on the path = depth
    assert len(critiques) == 2 * 3
    for d in range(4):
        level = [n for n in res.nodes if n.depth == d]
        best = sorted(level, key=lambda n: -n.reward)[:2]
        assert [n.items for n in res.kept[d]] == [n.items for n in best]
        if d:  # the kept nodes' parents were kept at the level above
            assert all(n.parent in res.kept[d - 1] for n in level)
    deep = res.kept[3][0]
    assert [r[1] for r in deep.rounds()] == [f"not {deep.parent.parent.parent.items[0]}",
                                            f"not {deep.parent.parent.items[0]}", f"not {deep.parent.items[0]}"]
    zero = search("t", "d", make_crs()[0], score, None, depth=0)
    assert len(zero.nodes) == 1 and len(zero.kept) == 1  # the CRS alone: one proposal, no critique


def test_candidate_ranking_mean_sum_and_vote():
    from rucai.grsu.search import Node

    nodes = [Node([1, 2], 0, 0), Node([2, 3], 0, 1), Node([2, 4], 0, 1), Node([3, 5], 0, 1)]
    s = {1: 0.9, 2: 0.4, 3: 0.5, 4: 0.5, 5: 0.1}

    def score(turn, dialogue, items):
        return [s[i] for i in items]

    assert rank_candidates(nodes, "t", "d", score, "mean") == [1, 3, 4, 2, 5]  # 3 before 4: first seen
    # sum: 2 -> 1.2, 3 -> 1.0, 1 -> .9, 4 -> .5, 5 -> .1
    assert rank_candidates(nodes, "t", "d", score, "sum") == [2, 3, 1, 4, 5]
    # vote: 2 x3, 3 x2, then 1 (.9), 4 (.5), 5 (.1)
    assert rank_candidates(nodes, "t", "d", score, "vote") == [2, 3, 1, 4, 5]
    with pytest.raises(ValueError):
        rank_candidates(nodes, "t", "d", score, "max")


def test_evaluate_resumes_from_the_turns_already_written(tmp_path, tiny_data_dir):
    import json

    from tests.conftest import run_cli

    common = ["experiment=grsu/redial_cpu", "hardware=cpu", f"paths.data_dir={tiny_data_dir}",
              "method.search.depth=0", "method.search.reward=random"]  # the CRS alone: no LLM needed
    run = tmp_path / "run"
    r = run_cli(*common, "method.max_turns=2", run_dir=run, env={"RUCAI_DATA_DIR": str(tiny_data_dir)})
    assert r.returncode == 0, r.stderr[-3000:]
    first = (run / "turns.jsonl").read_text().splitlines()
    assert len(first) == 2 and r.metrics()["turns"] == 2
    with open(run / "turns.jsonl", "a") as f:
        f.write('{"turn": "torn')  # a kill mid-write leaves a torn last line
    r = run_cli(*common, "method.max_turns=4", run_dir=run, env={"RUCAI_DATA_DIR": str(tiny_data_dir)})
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [ln for ln in (run / "turns.jsonl").read_text().splitlines() if ln.startswith('{"turn": "test')]
    assert lines[:2] == first and len(lines) == 4
    m = r.metrics()
    assert m["turns"] == 4 and "crs/Recall@50" in m and "search_mean/Recall@50" not in m
    recs = [json.loads(ln) for ln in lines]
    assert all(len(x["crs"]) == len(set(x["crs"])) for x in recs)


def test_simulator_sft_then_auc_with_the_tuned_model(tmp_path, tiny_data_dir):
    import json

    from tests.conftest import run_cli

    env = {"RUCAI_DATA_DIR": str(tiny_data_dir)}
    common = ["experiment=grsu/redial_cpu", "debug=smoke", "hardware=cpu", f"paths.data_dir={tiny_data_dir}"]
    run = tmp_path / "sft"
    r = run_cli(*common, "task=grsu.sft", run_dir=run, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    done = json.loads((run / "sft" / "done.json").read_text())["result"]
    assert done["examples"] == 8 and done["yes_share"] == 0.5  # one negative per positive
    assert (run / "sft" / "simulator" / "config.json").is_file()
    r = run_cli(*common, "task=grsu.simulator_auc", f"method.simulator_dir={run / 'sft' / 'simulator'}",
                run_dir=tmp_path / "auc", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    m = r.metrics()
    assert 0.0 <= m["auc"] <= 1.0 and m["positives"] == m["negatives"] == 4


def test_warmup_cosine_and_assistant_only_labels():
    from rucai.llm.sft import encode_example, warmup_cosine

    assert warmup_cosine(0, 10, 110, 0.1) == 0.0 and warmup_cosine(5, 10, 110, 0.1) == 0.5
    assert warmup_cosine(10, 10, 110, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(60, 10, 110, 0.1) == pytest.approx(0.1 + 0.9 * 0.5)  # half way: cos(pi/2) = 0
    assert warmup_cosine(110, 10, 110, 0.1) == pytest.approx(0.1)

    class Tok:  # a chat template: one id per character, "<" + role + ">" headers
        def apply_chat_template(self, msgs, tokenize=True, add_generation_prompt=False):
            text = "".join(f"<{m['role'][0]}>{m['content']}|" for m in msgs) + ("<a>" if add_generation_prompt else "")
            return [ord(c) for c in text]

    msgs = [{"role": "user", "content": "hi"}]
    full = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Yes"}]
    row = encode_example(Tok(), msgs, "Yes", 64)
    want = Tok().apply_chat_template(full)
    assert row["input_ids"] == want
    n_prompt = len(Tok().apply_chat_template(msgs, add_generation_prompt=True))
    assert row["labels"][:n_prompt] == [-100] * n_prompt and row["labels"][n_prompt:] == [ord(c) for c in "Yes|"]
    cut = encode_example(Tok(), msgs, "Yes", 6)  # the prompt is cut from the left
    assert cut["input_ids"][-4:] == [ord(c) for c in "Yes|"] and len(cut["input_ids"]) == 6
