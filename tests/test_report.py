"""The reproduction report (`python -m rucai.report`): paper.yml checks, the aggregation over seeds
(the results command's), the status rules, `--check`, and the real repository's files."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pandas as pd
import pytest

from rucai import cli, report, results
from rucai.errors import UserError
from rucai.report import Stat, Target, status

ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------------------------
# a tiny repository: one paper, one experiment, a few runs


PAPER_YML = """\
paper: Toy
title: "A toy paper"
reference: "Nobody, 2026"
area: rec
headline: vs_base/recall@10
decimals: 4
scales:
  cpu:
    description: "a CPU stand-in"
    dataset: "Toy 2018"
    deviations: ["smaller"]
claims:
  - id: vs_base
    claim: "Toy beats Base"
    source: "Table 2, Toy and Base rows"
    verified: false
    verified_note: "secondary: a digest"
    dataset: "Toy 2023"
    row: Toy
    values: {recall@10: 0.0616}
    baseline: {row: Base, values: {recall@10: 0.0564}}
    reproductions:
      - experiment: toy/big
        scale: paper
        reason: "needs 8 GPUs"
      - experiment: toy/small
        scale: cpu
        results: [experiments/toy/results/toy]
        metric: "test/{metric}"
        baseline:
          experiment: toy/small
          results: [experiments/toy/results/base]
          metric: "test/{metric}"
  - id: same_data
    claim: "Toy on its own data"
    source: "Table 3"
    verified: true
    dataset: "Toy 2023"
    row: Toy
    metric: recall@10
    value: 0.0600
    reproductions:
      - experiment: toy/small
        scale: paper
        results: [experiments/toy/results/toy]
        metric: test/recall@10
"""


def _run(folder: Path, seed: int, value: float, experiment: str = "toy/small", status_: str = "completed") -> None:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(f"- experiment={experiment}\n- seed={seed}\n")
    (folder / "metrics.json").write_text(json.dumps({
        "experiment": experiment, "task": "train", "status": status_, "seed": seed, "host": "vm",
        "end_time": f"2026-12-0{seed + 1}T10:00:00", "test/recall@10": value, "test/ndcg@10": value / 2}))


def make_repo(root: Path, paper_yml: str = PAPER_YML) -> Path:
    exp = root / "experiments" / "toy"
    exp.mkdir(parents=True)
    (exp / "README.md").write_text("# Toy\n")
    (exp / "big.yaml").write_text("# @package _global_\n")
    (exp / "small.yaml").write_text("# @package _global_\n")
    (exp / "paper.yml").write_text(paper_yml)
    for seed, v in enumerate((0.060, 0.062, 0.061)):
        _run(exp / "results" / "toy" / str(seed), seed, v)
    for seed, v in enumerate((0.050, 0.051, 0.049)):
        _run(exp / "results" / "base" / str(seed), seed, v)
    (exp / "results" / "toy" / "command.txt").write_text(
        "command: python run.py -m experiment=toy/small seed=0,1,2\ndate: 2026-12-03 10:00 UTC\n"
        "machine: 2-core VM, shared (two jobs)\n")
    return root


def _rows(root: Path) -> list[report.Row]:
    return report.evaluate(report.load_paper(root / "experiments" / "toy" / "paper.yml", root), root)


# ----------------------------------------------------------------------------------------------
# paper.yml: missing or malformed input is one line naming the file


@pytest.mark.parametrize("drop, key", [('    source: "Table 2, Toy and Base rows"\n', "source"),
                                      ("    metric: recall@10\n", "metric")])
def test_a_paper_file_without_source_or_metric_fails_in_one_line(tmp_path, capsys, drop, key):
    assert drop in PAPER_YML
    root = make_repo(tmp_path, PAPER_YML.replace(drop, "", 1))
    with pytest.raises(UserError) as e:
        report.load_papers(root)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("experiments/toy/paper.yml:") and f"'{key}'" in msg
    assert report.main(["--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: experiments/toy/paper.yml:")


@pytest.mark.parametrize("edit, needle", [
    (lambda s: s.replace("experiments/toy/results/toy]", "experiments/toy/results/nope]"), "results/nope"),
    (lambda s: s.replace("experiment: toy/small\n        scale: cpu", "experiment: toy/smal\n        scale: cpu"),
     "toy/smal"),
    (lambda s: s.replace("value: 0.0600", "value: zero"), "'value'"),
    (lambda s: s.replace("scale: cpu", "scale: gpu"), "unknown scale 'gpu'"),
    (lambda s: s + "  - id: x\n    bogus: 1\n", "unknown key 'bogus'"),
    (lambda s: s.replace("claims:", "claims: [\n"), "not valid YAML"),
])
def test_bad_paper_files_name_the_file_and_the_problem(tmp_path, edit, needle):
    root = make_repo(tmp_path, edit(PAPER_YML))
    with pytest.raises(UserError) as e:
        report.build(root)
    assert "\n" not in str(e.value) and "experiments/toy/paper.yml" in str(e.value) and needle in str(e.value)


def test_a_malformed_metrics_json_or_a_missing_paper_file_names_the_file(tmp_path):
    root = make_repo(tmp_path)
    (root / "experiments" / "toy" / "results" / "toy" / "1" / "metrics.json").write_text("{not json")
    with pytest.raises(UserError, match=r"^experiments/toy/results/toy/1/metrics.json: not valid JSON"):
        report.build(root)
    (root / "experiments" / "toy" / "paper.yml").unlink()
    with pytest.raises(UserError, match=r"^experiments/toy/paper.yml: missing"):
        report.build(root)


def test_paper_files_are_not_hydra_experiments():
    assert report.PAPER_FILE.endswith(".yml")  # *.yaml under experiments/ would be listed as experiments
    assert not [e for e in cli.experiments() if e.endswith("/paper")]


# ----------------------------------------------------------------------------------------------
# aggregation over seeds = the results command's


def test_aggregation_over_seeds_matches_the_results_command(tmp_path):
    root = make_repo(tmp_path)
    rows = _rows(root)
    measured = [r for r in rows if r.claim.id == "same_data"][0].ours
    # the results command on the same folder, as a user runs it
    out = tmp_path / "tables"
    assert results.main([str(root / "experiments/toy/results/toy"), "--out", str(out),
                         "--metrics", "test/recall@10"]) == 0
    table = pd.read_csv(out / "results_seeds.csv")
    assert len(table) == 1
    assert measured.stat.n == table["test/recall@10 n"][0] == 3
    assert measured.stat.mean == pytest.approx(table["test/recall@10 mean"][0], abs=0, rel=1e-12)
    assert measured.stat.std == pytest.approx(table["test/recall@10 std"][0], abs=0, rel=1e-12)
    assert measured.stat.mean == pytest.approx(0.061) and measured.stat.std == pytest.approx(0.001)
    assert measured.seeds == "0,1,2" and measured.dates == ("2026-12-01", "2026-12-02", "2026-12-03")
    assert measured.machine == "2-core VM, shared"  # command.txt's machine line wins over the host


def test_only_completed_runs_count_and_two_configurations_need_a_group(tmp_path):
    root = make_repo(tmp_path)
    _run(root / "experiments/toy/results/toy/3", 3, 0.9, status_="failed")
    toy = [r for r in _rows(root) if r.claim.id == "same_data"][0].ours
    assert toy.stat.n == 3 and toy.stat.mean == pytest.approx(0.061)
    _run(root / "experiments/toy/results/toy/4", 0, 0.9, experiment="toy/big")
    with pytest.raises(UserError, match="2 groups of seeds under experiments/toy/results/toy"):
        _rows(root)
    paper = PAPER_YML.replace("        results: [experiments/toy/results/toy]\n        metric: test/recall@10",
                              "        results: [experiments/toy/results/toy]\n        metric: test/recall@10\n"
                              "        group: {experiment: toy/big}")
    (root / "experiments/toy/paper.yml").write_text(paper)
    with pytest.raises(UserError, match="2 groups"):  # the comparison's reproduction still has two
        _rows(root)


def test_json_and_csv_results_files(tmp_path):
    root = make_repo(tmp_path)
    res = root / "experiments/toy/results"
    (res / "released.json").write_text(json.dumps({"date": "2026-12-03", "machine": "laptop",
                                                   "results": {"a": {"cover_em": 0.6540}, "b": {"cover_em": 0.1}}}))
    (res / "drift.csv").write_text("recipe,epochs,drift\nx,100,0.3\nx,300,0.1041\ny,300,0.5\n")
    extra = """\
  - id: released
    claim: "released outputs"
    source: "Table 1"
    verified: true
    dataset: "Toy 2023"
    row: Toy
    metric: cover-EM
    value: 0.654
    decimals: 3
    reproductions:
      - experiment: null
        scale: paper
        results: [experiments/toy/results/released.json]
        key: [results, a]
        metric: cover_em
  - id: drift
    claim: "drift"
    source: "text"
    verified: true
    dataset: "Toy 2018"
    row: Toy
    metric: drift
    range: [0.09, 0.14]
    reproductions:
      - experiment: null
        scale: cpu
        results: [experiments/toy/results/drift.csv]
        where: {recipe: x, epochs: "300"}
        metric: drift
"""
    (root / "experiments/toy/paper.yml").write_text(PAPER_YML + extra)
    rows = {r.claim.id: r for r in _rows(root)}
    rel, drift = rows["released"], rows["drift"]
    assert rel.ours.stat.mean == 0.654 and rel.ours.stat.n == 1 and math.isnan(rel.ours.stat.std)
    assert rel.status == report.REPRODUCED and rel.ours.dates == ("2026-12-03",) and rel.ours.machine == "laptop"
    assert drift.ours.stat.mean == pytest.approx(0.1041) and drift.status == report.NOT_COMPARABLE


# ----------------------------------------------------------------------------------------------
# the status rules on constructed cases


P = Target(value=0.0600)


def test_value_claims():
    assert status(None, P, comparable=True) == report.NOT_RUN
    assert status(Stat(0.06, 0.001, 3), Target(), comparable=True) == report.NO_PAPER_NUMBER
    assert status(Stat(0.06, 0.001, 3), P, comparable=False) == report.NOT_COMPARABLE  # even when equal
    # the boundary of our seed spread: |ours - paper| == std is inside, a hair beyond is not
    assert status(Stat(0.0610, 0.0010, 3), P, comparable=True) == report.REPRODUCED
    assert status(Stat(0.0590, 0.0010, 3), P, comparable=True) == report.REPRODUCED
    assert status(Stat(0.06101, 0.0010, 3), P, comparable=True) == report.NOT_REPRODUCED
    # one seed has no spread: only the paper's own spread or its rounding remain
    assert status(Stat(0.0601, math.nan, 1), P, comparable=True) == report.NOT_REPRODUCED
    assert status(Stat(0.0601, math.nan, 1), Target(value=0.06, std=0.0002), comparable=True) == report.REPRODUCED
    assert status(Stat(0.6544, math.nan, 1), Target(value=0.654, decimals=3), comparable=True) == report.REPRODUCED
    assert status(Stat(0.6556, math.nan, 1), Target(value=0.654, decimals=3), comparable=True) \
        == report.NOT_REPRODUCED
    # a quoted range
    assert status(Stat(0.12, math.nan, 1), Target(low=0.09, high=0.14), comparable=True) == report.REPRODUCED
    assert status(Stat(0.31, math.nan, 1), Target(low=0.09, high=0.14, decimals=2), comparable=True) \
        == report.NOT_REPRODUCED


def test_comparison_claims():
    paper, base = Target(value=0.0616), Target(value=0.0564)

    def cmp(a, b, comparable, p=paper, pb=base, higher=True):
        return status(a, p, comparable=comparable, baseline=b, paper_baseline=pb, comparison=True,
                      higher_is_better=higher)

    assert cmp(None, Stat(0.05, 0.001, 3), True) == report.NOT_RUN
    assert cmp(Stat(0.06, 0.001, 3), None, False) == report.NOT_RUN
    # paper's setting: both numbers within -> reproduced; else the direction, if separable
    assert cmp(Stat(0.0620, 0.0005, 3), Stat(0.0560, 0.0005, 3), True) == report.REPRODUCED
    assert cmp(Stat(0.0800, 0.0005, 3), Stat(0.0700, 0.0005, 3), True) == report.DIRECTION
    assert cmp(Stat(0.0700, 0.0005, 3), Stat(0.0800, 0.0005, 3), True) == report.NOT_REPRODUCED
    assert cmp(Stat(0.0800, 0.0005, 1), Stat(0.0700, 0.0005, 1), True) == report.NOT_REPRODUCED  # one seed
    # a stand-in: never reproduced, only the direction
    assert cmp(Stat(0.0620, 0.0005, 3), Stat(0.0560, 0.0005, 3), False) == report.STANDIN_DIRECTION
    assert cmp(Stat(0.0560, 0.0005, 3), Stat(0.0620, 0.0005, 3), False) == report.STANDIN_AGAINST
    assert cmp(Stat(0.1119, math.nan, 1), Stat(0.1032, 0.0001, 3), False) == report.STANDIN_INCONCLUSIVE
    # the boundary of separability: intervals that touch overlap
    assert cmp(Stat(0.100, 0.01, 3), Stat(0.080, 0.01, 3), False) == report.STANDIN_INCONCLUSIVE
    assert cmp(Stat(0.1001, 0.01, 3), Stat(0.080, 0.01, 3), False) == report.STANDIN_DIRECTION
    # numbers not quoted: the direction alone
    assert cmp(Stat(0.08, 0.001, 3), Stat(0.07, 0.001, 3), True, Target(), Target()) == report.DIRECTION
    # lower is better (a loss)
    assert cmp(Stat(2.19, 0.001, 3), Stat(2.37, 0.001, 3), False, Target(), Target(), higher=False) \
        == report.STANDIN_DIRECTION


def test_every_status_is_reachable_through_a_paper_file(tmp_path):
    rows = _rows(make_repo(tmp_path))
    got = {(r.claim.id, r.scale.name): r.status for r in rows}
    assert got == {("vs_base/recall@10", "paper"): report.NOT_RUN,
                   ("vs_base/recall@10", "cpu"): report.STANDIN_DIRECTION,
                   ("same_data", "paper"): report.REPRODUCED}


# ----------------------------------------------------------------------------------------------
# the report files and --check


def test_check_detects_a_changed_number(tmp_path, capsys):
    root = make_repo(tmp_path)
    assert report.main(["--root", str(root)]) == 0
    md = (root / "reports/reproduction.md").read_text()
    page = (root / "reports/reproduction.html").read_text()
    assert "0.0610 ± 0.0010 (n=3)" in md and "**reproduced**" in md and "0.0610 ± 0.0010 (n=3)" in page
    assert "../experiments/toy/README.md" in md and "<table>" in page
    assert report.main(["--root", str(root), "--check"]) == 0
    capsys.readouterr()
    run = root / "experiments/toy/results/toy/2/metrics.json"
    record = json.loads(run.read_text())
    record["test/recall@10"] = 0.070
    run.write_text(json.dumps(record))
    assert report.main(["--root", str(root), "--check"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: reports/reproduction.md:")
    assert "0.0610 ± 0.0010" in err and "0.0640 ± 0.0053" in err
    # regenerating is deterministic: twice the same bytes
    assert report.main(["--root", str(root)]) == 0
    first = (root / "reports/reproduction.md").read_bytes()
    assert report.main(["--root", str(root)]) == 0
    assert (root / "reports/reproduction.md").read_bytes() == first
    (root / "reports/reproduction.html").unlink()
    assert report.main(["--root", str(root), "--check"]) == 1
    assert "reports/reproduction.html is missing" in capsys.readouterr().err


def test_first_difference():
    assert report.first_difference("a\nb\n", "a\nb\n") is None
    assert report.first_difference("a\nb\n", "a\nc\n") == (2, "b", "c")
    assert report.first_difference("a\n", "a\nb\n") == (2, "<end of file>", "b")


# ----------------------------------------------------------------------------------------------
# the real repository (committed files only: experiments/*/paper.yml and results/)


def test_the_repository_paper_files_load_and_the_report_builds_in_seconds():
    papers = report.load_papers(ROOT)
    folders = {p.folder for p in papers}
    assert {"sasrec", "tiger", "mtgrec", "utgrec", "cocorec", "easyep", "olymmath", "r1searcher"} <= folders
    for p in papers:
        if p.planned_reason:
            continue
        for c in p.claims:
            assert c.source and c.metric and (c.verified or c.verified_note)
            assert c.paper.quoted or c.null_reason, (p.folder, c.id)
    start = time.perf_counter()
    md, page = report.build(ROOT)
    assert time.perf_counter() - start < 60  # a few seconds on an idle machine
    assert md.startswith("# Reproduction report") and "## All papers at a glance" in md
    assert page.startswith("<!DOCTYPE html>")
    for p in papers:
        assert f"## {p.name} (`experiments/{p.folder}/`)" in md
    statuses = {line.split("**")[1] for line in md.splitlines() if line.startswith("| `") and "**" in line}
    assert statuses <= set(report.STATUSES)
