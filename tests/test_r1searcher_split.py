"""The fixed HotpotQA split of issue 13 item 5 (`method.split`, `rucai/r1searcher/split.py`): 400 training
and 100 evaluation questions of the file the CPU pool indexes, disjoint, the same for every run seed,
every supporting paragraph in the pool; and the per-step answer metrics of the CPU report."""

from __future__ import annotations

import json

import pytest

from rucai.errors import UserError
from tests.conftest import DATA_DIR, compose_config, needs_data

SOURCE = ("multihop_qa", "hotpotqa_dev500_with_contexts.jsonl")
EXP = "experiment=r1searcher/smollm2_hotpot_split"


def _cfg(*extra: str):
    return compose_config(EXP, f"paths.data_dir={DATA_DIR}", *extra)


@needs_data(*SOURCE)
def test_split_is_disjoint_fixed_and_independent_of_the_run_seed():
    from rucai.r1searcher.evaluate import load_set
    from rucai.r1searcher.tasks import _load_rows

    parts = {}
    for seed in (1, 2):
        cfg = _cfg(f"seed={seed}")
        m = cfg.method
        assert m.stage1.data == "split_train" and list(m.eval.sets) == ["split_eval"]
        # through the loaders the training stage and the evaluation use
        parts[seed] = (_load_rows(cfg.paths.data_dir, m.stage1.data, m.split),
                       load_set(cfg.paths.data_dir, m.eval.sets[0], None, m.split))
        # the experiment evaluates the first method.eval.limit of them
        assert load_set(cfg.paths.data_dir, m.eval.sets[0], m.eval.limit, m.split) == parts[seed][1][:m.eval.limit]
    train, ev = parts[1]
    assert parts[2] == parts[1]  # the run seed does not move the split
    assert (len(train), len(ev)) == (400, 100)
    assert not {r["idx"] for r in train} & {r["idx"] for r in ev}
    assert not {r["question"].lower() for r in train} & {r["question"].lower() for r in ev}
    raw = [json.loads(x) for x in DATA_DIR.joinpath(*SOURCE).read_text().splitlines() if x.strip()]
    assert {r["idx"] for r in train + ev} <= {r["question_id"] for r in raw}
    by_id = {r["question_id"]: r for r in raw}
    r = ev[0]  # a row keeps its question and gold spans
    assert r["question"] == by_id[r["idx"]]["question_text"]
    assert r["answer"] == by_id[r["idx"]]["answers_objects"][0]["spans"]
    # the split's own seed does move it
    other = _load_rows(cfg.paths.data_dir, "split_eval", _cfg("method.split.seed=1").method.split)
    assert {x["idx"] for x in other} != {x["idx"] for x in ev}


@needs_data(*SOURCE)
def test_every_split_question_has_its_supporting_paragraphs_in_the_pool():
    from pathlib import Path

    from rucai.r1searcher.split import split_rows
    from rucai.retrieval.corpus import read_passages

    cfg = _cfg()
    r = cfg.method.retriever
    assert Path(r.input).resolve() == DATA_DIR.joinpath(*SOURCE).resolve()  # the pool is the split's file
    pool = {(p.title, p.text) for p in read_passages(r.source, r.input, words=int(r.words), limit=r.limit)}
    raw = {json.loads(x)["question_id"]: json.loads(x) for x in DATA_DIR.joinpath(*SOURCE).read_text().splitlines()
           if x.strip()}
    for part in split_rows(cfg.paths.data_dir, cfg.method.split).values():
        for row in part:
            sup = [c for c in raw[row["idx"]]["contexts"] if c["is_supporting"]]
            assert len(sup) == 2 and all((c["title"], " ".join(c["paragraph_text"].split())) in pool for c in sup)


def test_split_names_need_the_split_settings_and_bad_sizes_are_one_line(tmp_path):
    from rucai.r1searcher.config import SplitConfig
    from rucai.r1searcher.split import load_rows

    with pytest.raises(UserError, match="method.split"):
        load_rows(tmp_path, "split_train", None)
    (tmp_path / "multihop_qa").mkdir()
    rows = [{"question_id": f"q{i}", "question_text": f"question {i}?", "contexts": [],
             "answers_objects": [{"spans": [f"a{i}"]}]} for i in range(10)]
    (tmp_path / "multihop_qa" / "tiny.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(UserError, match="n_eval=8 \\+ n_train=4"):
        load_rows(tmp_path, "split_eval", SplitConfig(source="tiny", n_eval=8, n_train=4))
    ev = load_rows(tmp_path, "split_eval", SplitConfig(source="tiny", n_eval=3, n_train=7))
    tr = load_rows(tmp_path, "split_train", SplitConfig(source="tiny", n_eval=3, n_train=7))
    assert sorted(r["idx"] for r in ev + tr) == sorted(r["question_id"] for r in rows)
    # a duplicated question across the parts is refused, not leaked into training
    dup = rows + [dict(rows[0], question_id="q_dup")]
    (tmp_path / "multihop_qa" / "dup.jsonl").write_text("".join(json.dumps(r) + "\n" for r in dup))
    with pytest.raises(UserError, match="occurs twice"):
        for seed in range(50):  # some seed puts the two copies on different sides
            load_rows(tmp_path, "split_eval", SplitConfig(source="dup", n_eval=5, n_train=6, seed=seed))


def test_report_mean_std_and_separability_rule():
    from rucai.r1searcher.report import mean_std, separable

    m, sd, n = mean_std([0.1, 0.2, 0.6])
    assert (round(m, 6), round(sd, 6), n) == (0.3, round(((0.04 + 0.01 + 0.09) / 2) ** 0.5, 6), 3)
    assert separable([0.5, 0.6, 0.7], [0.1, 0.2, 0.3]) and not separable([0.3, 0.5, 0.7], [0.1, 0.3, 0.5])
    assert separable([0.9], [0.1]) is None  # one seed: no spread to compare with
