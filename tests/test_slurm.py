"""Sweeps through submitit on a real local SLURM cluster (scripts/slurm-local.sh up).

Every sweep runs under an outer timeout. Skipped when no cluster answers.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli


def _cluster_up() -> bool:
    if not shutil.which("sinfo") or not shutil.which("sacct"):
        return False
    try:
        p = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=10)
        q = subprocess.run(["sacct", "-n", "-X", "-S", "now-1minutes"], capture_output=True, timeout=10)
    except subprocess.TimeoutExpired:
        return False
    return p.returncode == 0 and q.returncode == 0 and any(s in p.stdout for s in ("idle", "mix", "alloc"))


# inside a job of these tests (which imports `slow_batches` below) the cluster is up by definition
_UP = "SLURM_JOB_ID" in os.environ or _cluster_up()
if not _UP and os.environ.get("RUCAI_REQUIRE_SLURM") == "1":
    raise RuntimeError("RUCAI_REQUIRE_SLURM=1 but no SLURM cluster answers (bash scripts/slurm-local.sh up)")
pytestmark = [pytest.mark.slurm,
              pytest.mark.skipif(not _UP, reason="no local SLURM cluster (bash scripts/slurm-local.sh up)")]

# where (cluster=slurm) x how (hardware=cpu: one task, no GPUs per job)
SLURM = ["cluster=slurm", "hardware=cpu", "slurm.cpus_per_task=1", "slurm.time_min=10", "slurm.mem_gb=2"]


def _metrics(d: Path) -> dict:
    return json.loads((d / "metrics.json").read_text())


def test_sweep_returns_all_results_and_tabulates(tmp_path):
    sweep = tmp_path / "sweep"
    r = run_cli("-m", "experiment=quickstart", "debug=smoke", *SLURM, "model.hidden_size=16,32,64",
                run_dir=sweep, multirun=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    for i in range(3):
        m = _metrics(sweep / str(i))
        assert m["status"] == "completed" and m["slurm_job_id"].endswith(f"_{i}")
    from rucai.results import collect

    df = collect(sweep)
    assert sorted(df["model.hidden_size"].astype(int)) == [16, 32, 64]
    assert df["test/ndcg@10"].notna().all()


def test_killed_job_is_reported_and_others_kept(tmp_path):
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, str(ROOT / "run.py"), "-m", "experiment=quickstart", *SLURM,
           "trainer.limit_train_batches=3", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
           "callbacks.early_stopping.patience=1000", "trainer.max_epochs=1,2000", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=os.environ.copy(), start_new_session=True)
    try:
        deadline = time.time() + 240
        victim = None
        while time.time() < deadline:
            done0 = (sweep / "0" / "metrics.json").is_file()
            running1 = (sweep / "1" / "eval" / "val.csv").is_file()
            subs = [p.name for p in (sweep / ".submitit").glob("*_1")] if (sweep / ".submitit").is_dir() else []
            if done0 and running1 and subs:
                victim = subs[0]
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(1)
        assert victim, "job 1 never started training"
        subprocess.run(["scancel", "--signal=KILL", "--full", victim], check=True, timeout=30)
        killed_at = time.time()
        out, err = proc.communicate(timeout=180)  # bounded: the sweep must notice the dead job
        waited = time.time() - killed_at
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            subprocess.run(["scancel", "--name", "run"], timeout=30)
    assert proc.returncode != 0
    last = [ln for ln in err.splitlines() if ln.strip()][-1]
    assert last.startswith("error: 1 of 2 jobs failed"), err[-2000:]
    assert f"error: job #1 ({victim}" in err
    assert waited < 150
    assert _metrics(sweep / "0")["status"] == "completed"  # the other job's result is kept
    m1 = _metrics(sweep / "1")
    # the dispatcher's own record when the job's Python saw the end (SLURM's SIGTERM before the KILL:
    # interrupted, with its error), else the launcher's (failed); the cluster's state added either way
    assert m1["status"] in ("interrupted", "failed") and m1["error"] and m1["job_id"] == victim, m1
    assert m1["slurm_state"].startswith("CANCELLED"), m1
    failed = json.loads((sweep / "failed_jobs.json").read_text())
    assert [j["num"] for j in failed["jobs"]] == [1]


def slow_batches(seconds: float):
    """A Lightning callback (`+callbacks.slow._target_=tests.test_slurm.slow_batches`) that sleeps
    after every training batch: the job's work is wall-clock time, so how many allocations it needs
    depends on the time limit, not on how busy the machine's CPUs are."""
    from lightning.pytorch.callbacks import Callback

    class SlowBatches(Callback):
        def on_train_batch_end(self, *args, **kwargs) -> None:
            time.sleep(seconds)

    return SlowBatches()


EPOCHS = 6


def test_time_limit_requeues_and_resumes_from_checkpoint(tmp_path):
    sweep = tmp_path / "sweep"
    # A 3-minute job gets SLURM's pre-timeout signal (USR2) signal_delay_s=60 before its limit, up to
    # 60 s earlier (SLURM's timer resolution): 60-120 s after it starts. Its work is 6 epochs x 10
    # batches x 2 s of sleep (+ a little compute): 120 s, more than one allocation holds after the
    # ~20-40 s start-up. On the signal every stage saves checkpoints/last.ckpt (mid-epoch), submitit
    # requeues the job and the rerun resumes from it (ckpt_path=last, set by cluster=slurm).
    r = run_cli("-m", "experiment=quickstart", "cluster=slurm", "hardware=cpu", "slurm.cpus_per_task=1",
                "slurm.mem_gb=2", "slurm.time_min=3", "slurm.signal_delay_s=60", "slurm.max_requeues=10",
                f"trainer.max_epochs={EPOCHS}", "trainer.limit_train_batches=10", "trainer.limit_val_batches=1",
                "trainer.enable_progress_bar=false", "callbacks.early_stopping.patience=1000", "seed=1",
                "+callbacks.slow._target_=tests.test_slurm.slow_batches", "+callbacks.slow.seconds=2.0",
                run_dir=sweep, multirun=True, timeout=560)
    assert r.returncode == 0, r.stderr[-3000:]
    m = _metrics(sweep / "0")
    assert m["status"] == "completed" and m["epochs_trained"] == EPOCHS
    assert m["slurm_restart_count"] >= 1, m
    assert m["start_epoch"] > 0 and m["resumed_from"].endswith("checkpoints/last.ckpt"), m
    epochs = [int(row["epoch"]) for row in csv.DictReader(open(sweep / "0" / "eval" / "val.csv"))]
    assert sorted(set(epochs)) == list(range(EPOCHS))
    # at most the epoch in flight at each requeue is evaluated twice; nothing restarts from scratch
    assert len(epochs) <= EPOCHS + m["slurm_restart_count"]


@pytest.mark.parametrize("args,expect", [
    (["slurm.mem_gb=100000"], "Requested node configuration is not available"),
    (["hardware=gpu"], "Invalid generic resource (gres) specification"),  # a GPU on the CPU-only node
])
def test_bad_cluster_requests_one_line(tmp_path, args, expect):
    sweep = tmp_path / "sweep"
    base = [a for a in SLURM if not any(a.split("=")[0] == b.split("=")[0] for b in args)]
    r = run_cli("-m", "experiment=quickstart", "debug=smoke", *base, *args, run_dir=sweep, multirun=True,
                timeout=120)
    assert r.returncode == 2
    last = [ln for ln in r.stderr.splitlines() if ln.strip()][-1]
    assert last.startswith("error: the cluster refused the sweep:") and expect in last, r.stderr[-2000:]
    assert json.loads((sweep / "failed_jobs.json").read_text())["stage"] == "submission"


def test_deepspeed_sweep_asks_for_nodes_tasks_and_gpus(tmp_path):
    """A DeepSpeed sweep over 2 nodes x 2 GPUs: one array job per sweep point, each asking SLURM for
    2 nodes, 2 tasks (ranks) and 2 GPUs per node. The CPU-only test node refuses the GPUs, in one line
    that names what was asked; the sbatch script submitit wrote shows the request."""
    sweep = tmp_path / "sweep"
    r = run_cli("-m", "experiment=quickstart", "debug=smoke", "cluster=slurm", "hardware=deepspeed_stage_2",
                "hardware.devices=2", "hardware.num_nodes=2", "slurm.cpus_per_task=1", "slurm.mem_gb=2",
                "slurm.time_min=10", "model.lr=1e-3,5e-4", run_dir=sweep, multirun=True, timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    last = [ln for ln in r.stderr.splitlines() if ln.strip()][-1]
    assert last.startswith("error: the cluster refused the sweep:"), r.stderr[-2000:]
    assert "nodes=2, tasks_per_node=2" in last and "gpus_per_node=2" in last, last
    failed = json.loads((sweep / "failed_jobs.json").read_text())
    assert failed["stage"] == "submission" and [j["num"] for j in failed["jobs"]] == [0, 1]
    [script] = (sweep / ".submitit").glob(".submission_file_*.sh")
    lines = set(script.read_text().splitlines())
    assert {"#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=2", "#SBATCH --gpus-per-node=2",
            "#SBATCH --array=0-1%2"} <= lines, script.read_text()
