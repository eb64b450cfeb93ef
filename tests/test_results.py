"""`python -m rucai.results`: per-run tables and the table over seeds, on hand-made run folders."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from rucai import results

# two learning rates x three seeds; hand-computed statistics below
NDCG = {"1e-3": [0.10, 0.12, 0.14], "5e-4": [0.20, 0.25, 0.30]}
RECALL = {"1e-3": [0.30, 0.30, 0.36], "5e-4": [0.40, 0.40, 0.40]}
# mean, sample std (ddof=1)
EXPECT = {"1e-3": {"test/ndcg@10": (0.12, 0.02), "test/recall@10": (0.32, math.sqrt(0.0024 / 2))},
          "5e-4": {"test/ndcg@10": (0.25, 0.05), "test/recall@10": (0.40, 0.0)}}


def _run(d: Path, overrides: list[str], metrics: dict) -> Path:
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (d / "metrics.json").write_text(json.dumps(metrics))
    return d


def _sweep(root: Path) -> Path:
    """A multirun folder as Hydra + the dispatcher leave it: <sweep>/<num>/{metrics.json,.hydra/}."""
    num = 0
    for lr in ("1e-3", "5e-4"):
        for seed in range(3):
            _run(root / str(num), ["experiment=sasrec/office", f"model.lr={lr}", f"seed={seed}",
                                   f"hydra.sweep.dir={root}"],
                 {"experiment": "sasrec/office", "task": "train", "status": "completed", "seed": seed,
                  "slurm_job_id": f"77_{num}", "seconds": 10.0 + num, "host": f"node{num}",
                  "test/ndcg@10": NDCG[lr][seed], "test/recall@10": RECALL[lr][seed], "val/ndcg@10": 0.5})
            num += 1
    # a failed run of the first group: listed, but not in the means (its partial metric would skew them)
    _run(root / str(num), ["experiment=sasrec/office", "model.lr=1e-3", "seed=3"],
         {"experiment": "sasrec/office", "task": "train", "status": "failed", "seed": 3,
          "error": "RuntimeError: CUDA out of memory", "test/ndcg@10": 0.9})
    (root / ".submitit" / "77_0").mkdir(parents=True)  # submitit's folder holds no runs
    (root / "multirun.yaml").write_text("{}\n")
    return root


def test_collect_lists_every_run_with_status(tmp_path):
    df = results.collect(_sweep(tmp_path / "sweep"))
    assert df["run"].tolist() == [str(i) for i in range(7)]  # natural order
    assert df["status"].tolist() == ["completed"] * 6 + ["failed"]
    assert df.loc[6, "error"] == "RuntimeError: CUDA out of memory"
    assert not any(c.startswith("hydra.") for c in df.columns)
    assert df["seed"].tolist() == [0, 1, 2, 0, 1, 2, 3]


def test_seeds_table_groups_runs_that_differ_only_in_seed(tmp_path):
    df = results.collect(_sweep(tmp_path / "sweep"))
    table = results.seeds_table(df)
    assert len(table) == 2
    assert table["model.lr"].tolist() == ["1e-3", "5e-4"]
    assert table["experiment"].tolist() == ["sasrec/office"] * 2
    assert table["runs"].tolist() == [4, 3] and table["failed"].tolist() == [1, 0]
    assert table["seeds"].tolist() == ["0,1,2", "0,1,2"]
    for _, row in table.iterrows():
        for metric, (mean, std) in EXPECT[row["model.lr"]].items():
            assert row[f"{metric} n"] == 3
            assert row[f"{metric} mean"] == pytest.approx(mean)
            assert row[f"{metric} std"] == pytest.approx(std, abs=1e-12)
    # bookkeeping that differs per run (job ids, hosts, durations) neither splits groups nor counts as a metric
    assert not any(c.startswith(("slurm_job_id", "host", "seconds")) for c in table.columns)


def test_std_of_one_run_is_blank_and_other_overrides_split_groups(tmp_path):
    root = tmp_path / "runs"
    _run(root / "a", ["experiment=sasrec/office", "seed=0"], {"status": "completed", "test/ndcg@10": 0.3})
    _run(root / "b", ["experiment=sasrec/office", "seed=1"], {"status": "completed", "test/ndcg@10": 0.5})
    _run(root / "c", ["experiment=sasrec/office", "seed=0", "data.max_len=20"],
         {"status": "completed", "test/ndcg@10": 0.7})
    table = results.seeds_table(results.collect(root))
    assert table["data.max_len"].tolist() == ["", "20"]
    assert table["test/ndcg@10 mean"].tolist() == pytest.approx([0.4, 0.7])
    assert table["test/ndcg@10 n"].tolist() == [2, 1]
    assert math.isnan(table.loc[1, "test/ndcg@10 std"])


def test_cli_writes_tables_and_plot_from_several_dirs(tmp_path, capsys):
    sweep = _sweep(tmp_path / "multirun" / "2026-01-01" / "10-00-00")
    single = _run(tmp_path / "single", ["experiment=sasrec/office", "model.lr=1e-3", "seed=7"],
                  {"experiment": "sasrec/office", "status": "completed", "seed": 7,
                   "test/ndcg@10": 0.16, "test/recall@10": 0.36})
    out = tmp_path / "report"
    assert results.main([str(sweep), str(single), "--out", str(out),
                         "--metrics", "test/recall@10,test/ndcg@10"]) == 0
    per_run = pd.read_csv(out / "results.csv")
    assert len(per_run) == 8 and "val/ndcg@10" not in per_run.columns
    assert per_run["status"].tolist().count("failed") == 1
    seeds = pd.read_csv(out / "results_seeds.csv")
    assert seeds["test/ndcg@10 n"].tolist() == [4, 3]  # the single run joins lr=1e-3's seeds
    assert seeds.loc[0, "test/ndcg@10 mean"] == pytest.approx((0.10 + 0.12 + 0.14 + 0.16) / 4)
    md = (out / "results_seeds.md").read_text()
    assert "0.2500 ± 0.0500" in md and "val/ndcg@10" not in md
    assert (out / "results.png").stat().st_size > 1000
    assert not (sweep / "results.csv").exists()  # --out, not the first DIR
    assert "results_seeds.md" in capsys.readouterr().out


def test_cli_defaults_to_first_dir_and_reports_bad_input(tmp_path, capsys):
    sweep = _sweep(tmp_path / "sweep")
    assert results.main([str(sweep)]) == 0
    assert (sweep / "results_seeds.csv").is_file() and (sweep / "results.md").is_file()
    assert results.main([str(tmp_path / "missing")]) == 2
    assert results.main([str(sweep), "--metrics", "test/nope@10"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: no runs have --metrics test/nope@10; metrics found: test/ndcg@10")


def test_cli_ignore_drops_an_override_before_grouping(tmp_path, capsys):
    root = tmp_path / "runs"
    _run(root / "a", ["experiment=tiger/office_cpu", "seed=0"], {"status": "completed", "test/ndcg@10": 0.3})
    _run(root / "b", ["experiment=tiger/office_cpu", "seed=1", "trainer.max_time=null"],
         {"status": "completed", "test/ndcg@10": 0.5})
    assert results.main([str(root), "--metrics", "test/ndcg@10"]) == 0
    assert pd.read_csv(root / "results_seeds.csv")["test/ndcg@10 n"].tolist() == [1, 1]
    assert results.main([str(root), "--metrics", "test/ndcg@10", "--ignore", "trainer.max_time"]) == 0
    seeds = pd.read_csv(root / "results_seeds.csv")
    assert seeds["test/ndcg@10 n"].tolist() == [2] and seeds.loc[0, "test/ndcg@10 mean"] == pytest.approx(0.4)
    assert results.main([str(root), "--ignore", "model.nope"]) == 2
    assert "--ignore model.nope: no run has that override" in capsys.readouterr().err
