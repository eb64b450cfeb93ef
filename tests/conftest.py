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


# How to get each real data folder (the first part of a `needs_data` path): a download command where
# rucai.data.download has one, else where the files come from (../shared/README.md, each SOURCE.txt).
DATA_SOURCES = {
    "amazon18_office": "python -m rucai.data.download amazon18 --category Office_Products --out {d}/amazon18_office",
    "ml-100k": "python -m rucai.data.download recbole --name ml-100k --out {d}",
    "amazon23": "python -m rucai.data.download amazon23 --category <Category> --out {d}/amazon23",
    "olymmath": "no downloader: OlymMATH-{{EN,ZH}}-{{EASY,HARD}}.jsonl from github.com/RUCAIBox/OlymMATH data/ "
                "into {d}/olymmath",
    "math": "no downloader: math500.jsonl, math_test.jsonl, aime25.jsonl = data/{{math500,math,aime25}}/test.jsonl "
            "of github.com/ZubinGou/math-evaluation-harness; aime24.jsonl, amc23.jsonl, gsm8k_test.jsonl = "
            "evaluation/data/{{aime24,amc23,gsm8k}}/test.jsonl of github.com/QwenLM/Qwen2.5-Math; "
            "hmmt_feb_2025.jsonl from github.com/RUCAIBox/EASYEP; into {d}/math",
    "multihop_qa": "no downloader: {{hotpotqa_500,2wiki_500,musique_500,bamboogle}}.jsonl = data/eval_set/ and "
                   "r1searcher_stage{{1,2}}_train.jsonl = data/training_set/stage_{{1,2}}.jsonl of "
                   "github.com/RUCAIBox/R1-Searcher; hotpotqa_dev500_with_contexts.jsonl = IRCoT-processed "
                   "HotpotQA dev (dev_subsampled.jsonl); into {d}/multihop_qa",
    "r1_aime23_traces": "no downloader: github.com/RUCAIBox/EASYEP dataset/aime23_full as JSONL into "
                        "{d}/r1_aime23_traces",
    "redial": "python -m rucai.data.download redial --out {d}/redial",
}


def data_hint(*parts: str) -> str:
    """One line: where the real `DATA_DIR/<parts>` is missing and how to get it."""
    path = DATA_DIR.joinpath(*parts)
    how = DATA_SOURCES.get(parts[0] if parts else "", "see ../shared/README.md").format(d=DATA_DIR)
    return f"real data not found at {path}: {how} (or set RUCAI_DATA_DIR to a folder holding it)"


def needs_data(*parts: str):
    """Skip unless the REAL data `DATA_DIR/<parts>` is here; the reason names how to get it."""
    path = DATA_DIR.joinpath(*parts)
    return pytest.mark.skipif(not path.exists(), reason=data_hint(*parts))


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    """A tiny synthetic copy of every data folder the experiments read (tests/tiny_data.py)."""
    from tests.tiny_data import write_tiny_data

    return write_tiny_data(tmp_path_factory.mktemp("tiny_data"))


def has_real_data() -> bool:
    """True when DATA_DIR holds every folder the experiments read (../shared/data on the lab machines)."""
    from tests.tiny_data import FOLDERS

    return all((DATA_DIR / f).is_dir() for f in FOLDERS)


@pytest.fixture(scope="session")
def smoke_data_dir(tmp_path_factory) -> Path:
    """The `paths.data_dir` for smoke runs: DATA_DIR when it holds the real data, else the tiny set, with
    any other folder of DATA_DIR (e.g. a downloaded amazon23/) linked in beside it."""
    if has_real_data():
        return DATA_DIR
    from tests.tiny_data import write_tiny_data

    root = write_tiny_data(tmp_path_factory.mktemp("smoke_data"))
    if DATA_DIR.is_dir():
        for entry in DATA_DIR.iterdir():
            if not (root / entry.name).exists():
                (root / entry.name).symlink_to(entry.resolve())
    return root


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


@pytest.fixture
def from_pretrained_calls(monkeypatch) -> list[dict]:
    """The keyword arguments of every AutoModelForCausalLM.from_pretrained call (the load still runs)."""
    from transformers import AutoModelForCausalLM

    calls: list[dict] = []
    orig = AutoModelForCausalLM.from_pretrained

    def spy(path, *a, **kw):
        calls.append(kw)
        return orig(path, *a, **kw)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)
    return calls


@pytest.fixture(scope="module")
def tiny_hf_llm():
    """The hf backend over a tiny random causal LM (seed 0, batch size 4), shared by the LLM tests."""
    from rucai.llm.hf import HFLLM
    from rucai.llm.models import tiny_causal_lm

    model, tok = tiny_causal_lm(seed=0)
    return HFLLM(model, tok, batch_size=4)
