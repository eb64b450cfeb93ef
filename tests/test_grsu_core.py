"""GRSU core: metrics at each k, response parsing, title matching, ReDial turns and split."""

from __future__ import annotations

import json
import math
import random

import pytest

from rucai.errors import UserError
from rucai.grsu.data import Turn, history_of, load_catalogue, load_redial, records_to_turns, split_dialogs
from rucai.grsu.matching import match_titles, parse_recommendations
from rucai.grsu.metrics import mean_metrics, rank_metrics, released_metrics
from tests.conftest import DATA_DIR, needs_data

RANKED = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]  # 30 at 0-based rank 2, 80 at rank 7


def test_rank_metrics_each_k_by_hand():
    m = rank_metrics(RANKED, [30, 80, 999], ks=(1, 5, 10))
    assert m["Recall@1"] == [0, 0, 0]
    assert m["Recall@5"] == [1, 0, 0]
    assert m["Recall@10"] == [1, 1, 0]
    assert m["NDCG@1"] == [0, 0, 0]
    assert m["NDCG@5"] == pytest.approx([0.5, 0, 0])  # 1/log2(2+2)
    assert m["NDCG@10"] == pytest.approx([0.5, 1 / math.log2(9), 0])
    assert m["MRR@5"] == pytest.approx([1 / 3, 0, 0])
    assert m["MRR@10"] == pytest.approx([1 / 3, 1 / 8, 0])
    assert rank_metrics(RANKED, [10])["NDCG@1"] == [1.0]


def test_released_metrics_use_top50_for_ndcg_and_mrr():
    ours = rank_metrics(RANKED, [30, 80])
    rel = released_metrics(RANKED, [30, 80])
    assert rel["Recall@1"] == ours["Recall@1"] == [0, 0]  # Recall is right in the release
    assert ours["NDCG@1"] == [0, 0] and ours["MRR@5"] == pytest.approx([1 / 3, 0])
    assert rel["NDCG@1"] == pytest.approx([0.5, 1 / math.log2(9)])  # = NDCG@50: the bug
    assert rel["MRR@5"] == pytest.approx([1 / 3, 1 / 8])
    assert rel["NDCG@50"] == ours["NDCG@50"]


def test_mean_metrics_per_turn_and_per_label():
    turns = [rank_metrics(RANKED, [30, 80], ks=(5,)), rank_metrics(RANKED, [10], ks=(5,))]
    assert mean_metrics(turns)["Recall@5"] == pytest.approx(0.75)  # (1/2 + 1) / 2, the authors'
    assert mean_metrics(turns, per="label")["Recall@5"] == pytest.approx(2 / 3)
    assert mean_metrics(turns)["MRR@5"] == pytest.approx((1 / 6 + 1) / 2)


def _response(n: int) -> str:
    lines = ["Here are my picks:"] + [f"{i}. **Movie {i} (20{i:02d})**" for i in range(1, n + 1)]
    return "\n".join(lines + ["Enjoy!"])


def test_parse_needs_exactly_k():
    titles = parse_recommendations(_response(10), 10)
    assert titles == [f"Movie {i} (20{i:02d})" for i in range(1, 11)]
    assert parse_recommendations(_response(9), 10) is None
    assert parse_recommendations(_response(11), 10) is None
    assert parse_recommendations("1. Movie (2000)\n2. **B (2001)**", 1) == ["B (2001)"]


def test_match_titles_duplicates_rematched():
    cat = {1: "Titanic (1997)", 2: "Titanic (1953)", 3: "Avatar (2009)", 4: "Heat (1995)"}
    assert match_titles(["Titanic (1997)", "Titanic (1997)", "avatar 2009"], cat) == [1, 2, 3]
    ids = match_titles(["The Avatar (2009)", "Avatar (2009)"], cat)
    assert ids[0] == 3 and ids[1] != 3 and len(set(ids)) == 2
    assert match_titles(["Heat", "Heat"], ["Heat (1995)", "Heat (1972)"]) == [0, 1]
    with pytest.raises(ValueError):
        match_titles(["a", "b", "c"], ["a", "b"])


def _rec(did, tid, context, rec, prev=(), is_user=0):
    return {"dialog_id": did, "turn_id": tid, "context": context, "resp": "r", "rec": list(rec),
            "prev_entity": list(prev), "entity": list(rec), "entity_name": [], "is_user": is_user}


def test_roles_assigned_backwards_from_user():
    # system spoke first ("Hello!"): ReDial's `input` would call it User
    ctx = ["", "Hello!", "Hello!", "What do you like?", "Horror like It (2017)"]
    assert history_of(ctx) == [("System", "Hello!"), ("User", "Hello!"), ("System", "What do you like?"),
                               ("User", "Horror like It (2017)")]
    assert history_of(["", "Hi, a comedy?"]) == [("User", "Hi, a comedy?")]
    assert [r for r, _ in history_of(["", "a", "b", "c"])] == ["User", "System", "User"]


def test_turn_filters_and_only_new():
    items = {5, 6, 7}
    recs = [
        _rec("d1", 1, [""], [5]),  # empty history: dropped
        _rec("d1", 2, ["", "u"], [5, 99], prev=[7]),  # 99 is not in the catalogue
        _rec("d1", 3, ["", "u", "s", "u"], [5], prev=[5, 7]),  # 5 already mentioned
        _rec("d1", 4, ["", "u", "s", "u"], [5, 6], prev=[6]),  # one old label: whole turn dropped
        _rec("d1", 5, ["", "u"], [99]),  # no catalogue label
        _rec("d1", 6, ["", "u"], [6], is_user=1),  # user turn
    ]
    all_turns = records_to_turns(recs, items)
    assert [(t.turn_id, t.labels) for t in all_turns] == [(2, [5]), (3, [5]), (4, [5, 6])]
    assert all_turns[0].mentioned == [7]
    assert [t.turn_id for t in records_to_turns(recs, items, only_new=True)] == [2]


def test_split_disjoint_and_deterministic():
    turns = [Turn(f"d{d}", t, [("User", "x")], [1]) for d in range(40) for t in range(d % 3 + 1)]
    train, ev = split_dialogs(turns, seed=0, frac=0.5)
    assert len({t.dialog_id for t in train}) == 20 and len({t.dialog_id for t in ev}) == 20
    assert not {t.dialog_id for t in train} & {t.dialog_id for t in ev}
    assert len(train) + len(ev) == len(turns)
    shuffled = list(turns)
    random.Random(3).shuffle(shuffled)
    again = split_dialogs(shuffled, seed=0, frac=0.5)
    assert {t.dialog_id for t in again[0]} == {t.dialog_id for t in train}
    others = [{t.dialog_id for t in split_dialogs(turns, seed=s)[0]} for s in (1, 2, 3)]
    assert any(o != {t.dialog_id for t in train} for o in others)


def test_missing_folder_and_catalogue_titles(tmp_path):
    with pytest.raises(UserError, match="python -m rucai.data.download redial --out"):
        load_redial(tmp_path / "nope")
    e2i = {"<http://dbpedia.org/resource/Water_(1985_film)>": 1, "<http://dbpedia.org/resource/Heat_(film)>": 2,
           "<http://dbpedia.org/resource/O_Brother,_Where_Art_Thou%3F>": 3, "<http://dbpedia.org/resource/X>": 4}
    (tmp_path / "entity2id.json").write_text(json.dumps(e2i))
    (tmp_path / "item_ids.json").write_text(json.dumps([1, 2, 3]))
    rec = _rec("d", 1, ["", "u"], [2]) | {"entity_name": ["You", "Heat (1995)"]}
    (tmp_path / "test.jsonl").write_text(json.dumps(rec) + "\n")
    assert load_catalogue(tmp_path) == {1: "Water (1985)", 2: "Heat (1995)", 3: "O Brother, Where Art Thou?"}
    assert [t.labels for t in load_redial(tmp_path)] == [[2]]


@needs_data("redial")
def test_real_redial_counts():
    d = DATA_DIR / "redial"
    turns = load_redial(d)
    assert len(turns) == 3500 and sum(len(t.labels) for t in turns) == 4709
    assert len(load_redial(d, only_new=True)) == 3085
    cat = load_catalogue(d)
    assert len(cat) == 6281 and {i for t in turns for i in t.labels} <= set(cat)
    first = next(t for t in turns if t.dialog_id == "test_20041")
    assert first.history[0] == ("System", "Hello!") and first.history[-1][0] == "User"
    assert all(t.history[-1][0] == "User" for t in turns)
    train, ev = split_dialogs(turns)
    assert (len(train), len(ev)) == (1756, 1744)
    assert not {t.dialog_id for t in train} & {t.dialog_id for t in ev}


def test_critique_seeds_come_from_the_prompt_not_a_call_counter():
    """A fresh simulator (a resumed run) asks the same critique with the same seed; asking the same prompt
    again draws another seed; another seed setting or other items give other seeds."""
    from rucai.grsu.simulator import Simulator

    class Recorder:
        def __init__(self):
            self.seeds = []

        def generate(self, prompts, sp):
            self.seeds.append(sp.seed)
            return [type("Out", (), {"text": "too old"})()]

    cat = {1: "Alien (1979)", 2: "Heat (1995)"}
    a, b = Recorder(), Recorder()
    s1 = Simulator(a, cat, seed=0)
    s1.critique("User: hi", [2])  # an earlier call: must not shift the next one's seed
    s1.critique("User: hi", [1])
    s1.critique("User: hi", [1])
    Simulator(b, cat, seed=0).critique("User: hi", [1])
    assert a.seeds[1] == b.seeds[0] and a.seeds[2] != a.seeds[1] and a.seeds[0] != a.seeds[1]
    c = Recorder()
    Simulator(c, cat, seed=1).critique("User: hi", [1])
    assert c.seeds[0] != b.seeds[0]
