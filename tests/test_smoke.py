"""End to end: every experiment runs to completion with debug=smoke on CPU (new papers included).

Data: the real folder (DATA_DIR, ../shared/data on the lab machines) when it is here, else the tiny
synthetic copy from tests/tiny_data.py (a fresh clone); see the `smoke_data_dir` fixture."""

import csv
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rucai import cli
from tests.conftest import DATA_DIR, compose_config, run_cli


def _compose(exp: str, data_dir: Path):
    return compose_config(f"experiment={exp}", f"paths.data_dir={data_dir}")


def _needs_gpu(cfg) -> bool:
    return bool(cfg.hardware.needs_gpu) or (cfg.get("llm") or {}).get("backend") == "vllm"


def _missing_data(cfg) -> str | None:
    """The experiment's data folder when it is not here (datasets users download, e.g. Amazon 2023)."""
    data = cfg.get("data") or {}
    d = data.get("dir") if hasattr(data, "get") else None
    return None if d is None or Path(d).exists() else str(d)


def _first_experiment_per_task() -> set[str]:
    """One CPU experiment per task (every paper task): its smoke run also logs to wandb (offline)."""
    first: dict[str, str] = {}
    for exp in cli.experiments():
        cfg = compose_config(f"experiment={exp}")
        if not _needs_gpu(cfg) and not (OmegaConf.select(cfg, "data.category") and "amazon23" in str(cfg.data.dir)):
            first.setdefault(cfg.task, exp)
    return set(first.values())


WANDB_EXPERIMENTS = _first_experiment_per_task()


@pytest.mark.parametrize("exp", cli.experiments())
def test_experiment_smoke(exp, tmp_path, smoke_data_dir):
    cfg = _compose(exp, smoke_data_dir)
    data = [f"paths.data_dir={smoke_data_dir}"]
    env = {"RUCAI_DATA_DIR": str(smoke_data_dir)}
    if smoke_data_dir != DATA_DIR and OmegaConf.select(cfg, "method.retriever.index_dir") is not None:
        data.append(f"method.retriever.index_dir={tmp_path / 'index'}")  # keep the tiny index out of the cache

    def run(*args, **kw):
        return run_cli(f"experiment={exp}", "debug=smoke", *args, *data, env=env, **kw)

    if _needs_gpu(cfg):  # GPU-only experiments (vLLM, 8-GPU models): one clear line on CPU
        r = run(run_dir=tmp_path / "run", timeout=120)
        last = [ln for ln in r.stderr.splitlines() if ln.strip()][-1]
        assert r.returncode == 2 and "needs CUDA GPUs; none visible" in last, r.stderr[-2000:]
        r = run("hardware=cpu", run_dir=tmp_path / "run2", timeout=120)
        last = [ln for ln in r.stderr.splitlines() if ln.strip()][-1]
        assert r.returncode == 2 and "needs a CUDA GPU" in last, r.stderr[-2000:]
        return
    if (missing := _missing_data(cfg)) is not None:  # a dataset users download: one line naming how
        r = run("hardware=cpu", run_dir=tmp_path / "run", timeout=180)
        last = [ln for ln in r.stderr.splitlines() if ln.strip()][-1]
        assert r.returncode == 2 and missing in last and "rucai.data.download" in last, r.stderr[-2000:]
        return
    wandb = exp in WANDB_EXPERIMENTS
    extra = ["logger=wandb"] if wandb else []
    env |= {"WANDB_MODE": "offline", "WANDB_API_KEY": ""} if wandb else {}
    r = run("hardware=cpu", *extra, run_dir=tmp_path / "run")
    assert r.returncode == 0, r.stderr[-3000:]
    if wandb:  # every paper task logs through the runtime's loggers: one offline run per job
        assert len(list((tmp_path / "run" / "wandb").glob("offline-run-*"))) == 1, exp
    m = r.metrics()
    assert m["status"] == "completed"
    assert (tmp_path / "run" / "config_resolved.yaml").is_file()
    assert (tmp_path / "run" / ".hydra" / "overrides.yaml").is_file()
    if m["task"] == "math_eval":
        run_dir = tmp_path / "run"
        assert (run_dir / "summary.md").is_file() and (run_dir / "per_problem.csv").is_file()
        rows = [json.loads(x) for x in (run_dir / "samples.jsonl").read_text().splitlines()]
        assert rows and {"response", "extracted", "correct", "num_tokens"} <= set(rows[0])
        assert 0.0 <= m["eval/pass@1"] <= 1.0
    if m["task"] in ("train", "cocorec.train"):
        assert 0.0 <= m["test/ndcg@10"] <= m["test/recall@10"] <= 1.0
        assert (tmp_path / "run" / "eval" / "val.csv").is_file()
        assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_resume_continues_from_saved_epoch(tmp_path):
    run_dir = tmp_path / "run"
    common = ["experiment=quickstart", "debug=smoke", "trainer.limit_train_batches=2"]
    first = run_cli(*common, "trainer.max_epochs=1", run_dir=run_dir)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.metrics()["start_epoch"] == 0
    second = run_cli(*common, "trainer.max_epochs=2", "ckpt_path=last", run_dir=run_dir)
    assert second.returncode == 0, second.stderr[-3000:]
    m = second.metrics()
    assert m["resumed_from"].endswith("checkpoints/last.ckpt")
    assert m["start_epoch"] == 1 and m["epochs_trained"] == 2  # continued, did not start over
    epochs = [int(r["epoch"]) for r in csv.DictReader(open(run_dir / "eval" / "val.csv"))]
    assert epochs == [0, 1], "epoch 0 evaluated once (first run), epoch 1 once (resumed run)"
    logged = {int(r["epoch"]) for r in csv.DictReader(open(run_dir / "csv" / "metrics.csv")) if r.get("epoch")}
    assert {0, 1} <= logged, "the logger's metrics.csv keeps epoch 0 (logged before the resume)"


def test_quickstart_sweep_and_results_table(tmp_path):
    sweep = tmp_path / "sweep"
    r = run_cli("-m", "experiment=quickstart", "model.hidden_size=32,64", "debug=smoke",
                run_dir=sweep, multirun=True)
    assert r.returncode == 0, r.stderr[-3000:]
    for i in (0, 1):
        assert json.loads((sweep / str(i) / "metrics.json").read_text())["status"] == "completed"
    from rucai.results import main as results_main

    assert results_main([str(sweep)]) == 0
    import pandas as pd

    df = pd.read_csv(sweep / "results.csv")
    assert sorted(df["model.hidden_size"].tolist()) == [32, 64]
    assert "test/ndcg@10" in df.columns and df["test/ndcg@10"].notna().all()
    assert (sweep / "results.md").read_text().startswith("|")
    assert (sweep / "results.png").stat().st_size > 1000  # metric vs swept value


def test_wandb_offline_sweep_shares_a_group(tmp_path):
    pytest.importorskip("wandb")
    sweep = tmp_path / "wbsweep"
    r = run_cli("-m", "experiment=quickstart", "debug=smoke", "logger=wandb", "model.hidden_size=16,32",
                run_dir=sweep, multirun=True, env={"WANDB_MODE": "offline", "WANDB_API_KEY": ""})
    assert r.returncode == 0, r.stderr[-3000:]
    for i, hs in ((0, 16), (1, 32)):
        runs = list((sweep / str(i) / "wandb").glob("offline-run-*"))
        assert len(runs) == 1, f"job {i} must write its own offline run"
        blob = next(runs[0].glob("*.wandb")).read_bytes()
        assert b"quickstart/wbsweep" in blob  # group = <experiment>/<sweep dir>
        assert f"model.hidden_size={hs}".encode() in blob  # the run's config carries its overrides


def test_evaluate_task_reproduces_test_metrics_from_checkpoint(tmp_path):
    common = ["experiment=quickstart", "debug=smoke", "trainer.limit_train_batches=2"]
    trained = run_cli(*common, run_dir=tmp_path / "train")
    assert trained.returncode == 0, trained.stderr[-3000:]
    m = trained.metrics()
    ev = run_cli(*common, "task=evaluate", f"ckpt_path={m['test_ckpt']}", run_dir=tmp_path / "eval")
    assert ev.returncode == 0, ev.stderr[-3000:]
    e = ev.metrics()
    assert e["task"] == "evaluate" and e["test_ckpt"] == m["test_ckpt"]
    assert abs(e["test/ndcg@10"] - m["test/ndcg@10"]) < 1e-6
    missing = run_cli(*common, "task=evaluate", run_dir=tmp_path / "eval2")
    assert missing.returncode == 2 and "task=evaluate needs ckpt_path" in missing.stderr


def test_submitit_local_sweep_records_failed_job(tmp_path, smoke_data_dir):
    pytest.importorskip("submitit")
    sweep = tmp_path / "local"
    good = smoke_data_dir / "amazon18_office"
    r = run_cli("-m", "hydra/launcher=rucai_local", "experiment=quickstart", "data=rec/amazon18_office",
                "debug=smoke", f"data.dir={good},/no/such/dir", run_dir=sweep, multirun=True, timeout=300)
    assert r.returncode == 1
    last = [ln for ln in r.stderr.splitlines() if ln.strip()][-1]
    assert last.startswith("error: 1 of 2 jobs failed"), r.stderr[-2000:]
    assert json.loads((sweep / "0" / "metrics.json").read_text())["status"] == "completed"
    failed = json.loads((sweep / "1" / "metrics.json").read_text())
    assert failed["status"] == "failed" and "data.dir=/no/such/dir does not exist" in failed["error"]
