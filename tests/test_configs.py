"""Every experiment composes with every building block; typos fail at compose time."""

import subprocess
import sys
import time

import pytest
from omegaconf import OmegaConf

from rucai import cli, schema
from rucai.registry import discover
from tests.conftest import ROOT, compose_config

schema.register()
EXPERIMENTS = cli.experiments()


def _compose(*overrides):
    return compose_config(*overrides)


@pytest.mark.parametrize("exp", EXPERIMENTS)
def test_experiment_composes_and_names_a_task(exp):
    cfg = _compose(f"experiment={exp}", "hardware=cpu", "debug=smoke")
    assert cfg.task in discover(), f"{exp}: unknown task {cfg.task}"
    assert cfg.experiment_name == exp, "experiment_name should equal the experiment's path"
    if cfg.model is not None:  # LLM experiments have no recommender model
        OmegaConf.to_container(cfg.model, resolve=False)


@pytest.mark.parametrize("group", sorted(set(cli.group_dirs()) - {"experiment"}))
def test_every_group_option_composes(group):
    for opt in cli.options(cli.group_dirs()[group]):
        _compose(f"{group}={opt}")


@pytest.mark.parametrize("bad", ["trainer.max_epoch=3", "seed=abc", "hardware.accelerater=gpu",
                                 "hardware.num_nodes=two"])
def test_typos_and_types_fail_at_compose(bad):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        _compose(bad)


_HELP = ("import runpy, sys; sys.argv=['run.py','--help']\n"
         "try:\n    runpy.run_path('run.py', run_name='__main__')\nexcept SystemExit:\n    pass\n"
         "heavy=[m for m in ('torch','transformers','vllm','lightning') if m in sys.modules]\n"
         "print('HEAVY', heavy)")


def test_help_does_not_import_torch():
    p = subprocess.run([sys.executable, "-c", _HELP], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "HEAVY []" in p.stdout
    for exp in EXPERIMENTS:
        assert exp.split("/")[-1] in p.stdout


@pytest.mark.bench  # wall-clock: meaningful on a quiet machine only (make bench)
def test_help_is_fast():
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", _HELP], cwd=ROOT, capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - t0
    assert p.returncode == 0, p.stderr
    assert elapsed < 8.0, f"--help took {elapsed:.1f}s"


def test_options_skip_debug_overlays_and_committed_results(tmp_path):
    from rucai.cli import options

    for rel in ["paper/run.yaml", "paper/debug/smoke.yaml", "paper/results/seed0/config_resolved.yaml"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("{}\n")
    assert options(tmp_path) == ["paper/run"]
