"""Shared fixtures: the repo root, the real data folder and a CLI runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = (ROOT.parent / "shared" / "data").resolve()
DATA_DIR = Path(os.environ.get("RUCAI_DATA_DIR", SHARED_DATA))
os.environ.setdefault("RUCAI_ROOT", str(ROOT))
os.environ.setdefault("RUCAI_DATA_DIR", str(DATA_DIR))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HYDRA_FULL_ERROR", "0")

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def needs_data(*parts: str):
    path = DATA_DIR.joinpath(*parts)
    return pytest.mark.skipif(not path.exists(), reason=f"real data not found at {path}")


class CLIResult:
    def __init__(self, proc: subprocess.CompletedProcess, run_dir: Path):
        self.proc = proc
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.run_dir = run_dir

    def metrics(self) -> dict:
        return json.loads((self.run_dir / "metrics.json").read_text())


def run_cli(*args: str, run_dir: Path | None = None, timeout: int = 600, env: dict | None = None,
            multirun: bool = False) -> CLIResult:
    """Run `python run.py <args>` in a subprocess (writing under `run_dir`)."""
    cmd = [sys.executable, str(ROOT / "run.py"), *args]
    if run_dir is not None:
        key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
        cmd.append(f"{key}={run_dir}")
    full_env = os.environ.copy() | (env or {})
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=full_env)
    return CLIResult(proc, run_dir or ROOT)


@pytest.fixture
def cli():
    return run_cli


def compose_config(*overrides: str, hydra_config: bool = False):
    """Compose `conf/config.yaml` with `overrides` as `run.py` would (schema and methods registered,
    `${hydra:...}` interpolations such as the derived `experiment_name` resolvable)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from rucai import cli, schema

    schema.register()
    with initialize_config_dir(version_base="1.3", config_dir=str(cli.CONF_DIR), job_name="test"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    if not hydra_config:
        with open_dict(cfg):
            del cfg["hydra"]
    return cfg
