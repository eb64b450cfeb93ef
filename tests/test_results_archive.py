"""rucai.results_archive: only a run's small text artefacts reach experiments/<paper>/results/."""

import json

import pytest

from rucai.errors import UserError
from rucai.results_archive import archive, main


def _run(d, seed=0):
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text(f"- seed={seed}\n")
    (d / "metrics.json").write_text(json.dumps({"status": "completed", "test/ndcg@10": 0.05 + seed / 100}))
    (d / "config_resolved.yaml").write_text("seed: 0\n")
    (d / "eval").mkdir()
    (d / "eval" / "val.csv").write_text("epoch,val/ndcg@10\n0,0.01\n")
    (d / "checkpoints").mkdir()
    (d / "checkpoints" / "last.ckpt").write_bytes(b"\0" * 10)
    (d / "checkpoints" / "notes.txt").write_text("inside checkpoints/: never archived")
    (d / "model.pt").write_bytes(b"\0" * 10)
    (d / "wandb").mkdir()
    (d / "wandb" / "summary.json").write_text("{}")
    (d / "run.log").write_text("log")
    return d


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_copies_only_small_text_files_keeping_layout(tmp_path):
    run = _run(tmp_path / "runs" / "a")
    out = tmp_path / "results" / "office"
    archive([run], out)
    assert _tree(out) == [".hydra/overrides.yaml", "config_resolved.yaml", "eval/val.csv", "metrics.json"]
    assert (out / "metrics.json").read_text() == (run / "metrics.json").read_text()


def test_several_runs_go_to_their_own_folders_and_results_reads_them(tmp_path):
    runs = [_run(tmp_path / "sweep" / str(s), seed=s) for s in (0, 1, 2)]
    out = tmp_path / "results" / "x"
    assert main([*map(str, runs), "--to", str(out), "--command", "python run.py -m seed=0,1,2"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["0", "1", "2", "command.txt"]
    assert "python run.py -m seed=0,1,2" in (out / "command.txt").read_text()
    from rucai.results import collect

    df = collect(out)
    assert sorted(df["seed"]) == [0, 1, 2] and sorted(df["test/ndcg@10"]) == pytest.approx([0.05, 0.06, 0.07])


def test_file_over_1_mib_refuses_before_copying_anything(tmp_path):
    run = _run(tmp_path / "a")
    (run / "eval" / "predictions.json").write_text("x" * ((1 << 20) + 1))
    out = tmp_path / "out"
    with pytest.raises(UserError, match="predictions.json"):
        archive([run], out)
    assert not out.exists()
    archive([run], out, exclude=("eval/predictions.json",))  # the named fix works
    assert "eval/predictions.json" not in _tree(out) and "metrics.json" in _tree(out)


def test_bad_input_is_a_one_line_error(tmp_path, capsys):
    assert main([str(tmp_path / "missing"), "--to", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "not a directory" in err and err.count("\n") == 1
    (tmp_path / "x" / "a").mkdir(parents=True)
    (tmp_path / "y" / "a").mkdir(parents=True)
    with pytest.raises(UserError, match="named a"):
        archive([tmp_path / "x" / "a", tmp_path / "y" / "a"], tmp_path / "o")
