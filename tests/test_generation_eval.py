"""Core math of the sampled evaluation: majority by equivalence, pass@1/cons@k, resume keys."""

from rucai.data.math import MathProblem
from rucai.eval.generation import append_rows, cluster_majority, read_samples, sampling_key, summarize


def _eq(a, b):
    norm = {"1/2": "0.5", "\\frac12": "0.5"}
    return norm.get(a, a) == norm.get(b, b)


def test_cluster_majority_uses_equivalence_and_first_on_ties():
    assert cluster_majority(["1/2", "3", "0.5", None, "\\frac12"], _eq) == "1/2"
    assert cluster_majority(["3", "4"], _eq) == "3"
    # no answer is a cluster of its own (the OlymMATH authors' cons@k), not dropped
    assert cluster_majority([None, None], _eq) == ""
    assert cluster_majority([None, "3", None], _eq) == ""
    assert cluster_majority([None, "3", "3", None, ""], _eq) == ""  # None and "" are the same non-answer
    assert cluster_majority(["3", None], _eq) == "3"  # ties: first seen


def test_summarize_pass_at_1_and_cons():
    problems = {"a": MathProblem("a", "?", "0.5", subject="Algebra", language="en", tier="easy"),
                "b": MathProblem("b", "?", "7", subject="Geometry", language="en", tier="hard")}
    rows = [
        {"problem_id": "a", "sample_idx": 0, "extracted": "1/2", "correct": True, "num_tokens": 10},
        {"problem_id": "a", "sample_idx": 1, "extracted": "3", "correct": False, "num_tokens": 20},
        {"problem_id": "a", "sample_idx": 2, "extracted": "0.5", "correct": True, "num_tokens": 30},
        {"problem_id": "b", "sample_idx": 0, "extracted": "6", "correct": False, "num_tokens": 5},
        {"problem_id": "b", "sample_idx": 1, "extracted": "7", "correct": True, "num_tokens": 5},
        {"problem_id": "b", "sample_idx": 2, "extracted": "6", "correct": False, "num_tokens": 5},
    ]
    m, per = summarize(rows, problems, _eq, lambda ans, gold: _eq(ans, gold))
    assert abs(m["eval/pass@1"] - (2 / 3 + 1 / 3) / 2) < 1e-9
    assert m["eval/cons@3"] == 0.5  # a: majority 1/2 (= gold); b: majority 6 (wrong)
    assert abs(m["eval/pass@1/tier=easy"] - 2 / 3) < 1e-9 and abs(m["eval/pass@1/tier=hard"] - 1 / 3) < 1e-9
    assert "eval/pass@1/subject=Algebra" in m and m["eval/mean_response_tokens"] == (20 + 5) / 2
    assert {r["problem_id"]: r["majority"] for r in per} == {"a": "1/2", "b": "6"}


def test_resume_keys_and_torn_lines(tmp_path):
    k1 = sampling_key({"model": "m"}, {"temperature": 0.6, "n": 4}, None)
    assert k1 == sampling_key({"model": "m"}, {"temperature": 0.6, "n": 10}, None)  # n does not matter
    assert k1 != sampling_key({"model": "m"}, {"temperature": 0.7}, None)
    p = tmp_path / "samples.jsonl"
    append_rows(p, [{"problem_id": "a", "sample_idx": 0, "sampling_key": k1},
                    {"problem_id": "a", "sample_idx": 0, "sampling_key": "other"}])
    with open(p, "a") as f:
        f.write('{"problem_id": "a", "sample_idx": 1, "sampl')  # crash mid-write
    assert list(read_samples(p, k1)) == [("a", 0)]
    append_rows(p, [{"problem_id": "b", "sample_idx": 0, "sampling_key": k1}])  # resumed run appends
    assert sorted(read_samples(p, k1)) == [("a", 0), ("b", 0)]


def test_math_eval_rescoring_reextracts_and_reports_strict_beside(tmp_path, smoke_data_dir):
    """A rerun over saved samples re-extracts the answer (cons@k clusters the current extraction, not the
    one saved at generation time) and a non-strict protocol reports the strict checker beside it."""
    import csv
    import json

    from tests.conftest import run_cli

    run_dir = tmp_path / "run"
    args = ["experiment=olymmath/smollm2", "debug=smoke", "hardware=cpu", "eval.protocol=olymmath_lenient",
            f"paths.data_dir={smoke_data_dir}"]
    env = {"RUCAI_DATA_DIR": str(smoke_data_dir)}
    r = run_cli(*args, run_dir=run_dir, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    samples = run_dir / "samples.jsonl"
    rows = [json.loads(x) for x in samples.read_text().splitlines()]
    for row in rows:  # every saved response now boxes the gold; the saved extraction is stale
        row["response"], row["extracted"] = f"so \\boxed{{{row['gold']}}}", "stale"
    samples.write_text("".join(json.dumps(row) + "\n" for row in rows))
    r = run_cli(*args, run_dir=run_dir, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    m = r.metrics()
    assert m["samples"] == len(rows) and m["eval/pass@1"] == 1.0 and m["eval/cons@2"] == 1.0
    assert m["eval/strict/pass@1"] == 1.0 and m["eval/strict/cons@2"] == 1.0
    majorities = [p["majority"] for p in csv.DictReader(open(run_dir / "per_problem.csv"))]
    assert "stale" not in majorities and len(majorities) == len({row["problem_id"] for row in rows})
