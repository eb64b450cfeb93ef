"""The task contract (CONTRIBUTING.md), checked for every paper: typed method settings that reject
typos, the same strategy objects for the Lightning and the Fabric path, no Trainer/Fabric/
from_pretrained outside the runtime, and a run record plus logger output for every paper task."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rucai import cli, schema
from tests.conftest import ROOT, compose_config

schema.register()
EXPERIMENTS = cli.experiments()


def _method_of(exp: str) -> str | None:
    return compose_config(f"experiment={exp}", hydra_config=True).hydra.runtime.choices.get("method")


METHOD_EXPERIMENT: dict[str, str] = {}
for _exp in EXPERIMENTS:
    _m = _method_of(_exp)
    if _m and _m not in METHOD_EXPERIMENT:
        METHOD_EXPERIMENT[_m] = _exp


def test_every_registered_method_is_used_by_an_experiment():
    assert set(schema.methods()) == set(METHOD_EXPERIMENT), (schema.methods(), METHOD_EXPERIMENT)


@pytest.mark.parametrize("name", sorted(schema.methods()))
def test_misspelled_method_key_fails_at_compose(name):
    from hydra.errors import ConfigCompositionException

    exp = METHOD_EXPERIMENT[name]
    with pytest.raises(ConfigCompositionException):
        compose_config(f"experiment={exp}", "method.no_such_setting=1")
    # the same dataclass guards the experiment YAMLs: an unknown key in a mapping merged onto it fails
    node = OmegaConf.structured(schema.methods()[name])
    with pytest.raises(Exception, match="no_such_setting"):
        OmegaConf.merge(node, {"no_such_setting": 1})


@pytest.mark.parametrize("name", sorted(schema.methods()))
def test_misspelled_method_key_is_one_cli_line(name, cli):
    r = cli(f"experiment={METHOD_EXPERIMENT[name]}", "method.no_such_setting=1", "--cfg", "job")
    # --cfg passes through the pre-flight; Hydra itself refuses the key
    assert r.returncode != 0
    r = cli(f"experiment={METHOD_EXPERIMENT[name]}", "method.no_such_setting=1")
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), r.stderr[-2000:]
    assert "no_such_setting" in lines[0]


PROFILES = ["ddp", "fsdp", "deepspeed_stage_2", "deepspeed_stage_3", "deepspeed_stage_3_offload"]


@pytest.mark.parametrize("profile", PROFILES)
def test_trainer_and_fabric_strategies_match_the_profile(profile):
    """Both paths build the profile's strategy class with every setting kept (no GPU needed)."""
    if profile.startswith("deepspeed"):
        pytest.importorskip("deepspeed")
    from rucai.runtime.hardware import build_strategy

    hw = compose_config(f"hardware={profile}").hardware
    conf = OmegaConf.to_container(hw.strategy)
    pt, fab = build_strategy(hw, "pytorch"), build_strategy(hw, "fabric", max_grad_norm=1.0)
    assert type(pt).__module__.startswith("lightning.pytorch.strategies")
    assert type(fab).__module__.startswith("lightning.fabric.strategies")
    assert type(pt).__name__ == type(fab).__name__ == conf["_target_"].rsplit(".", 1)[1]
    if profile.startswith("deepspeed"):
        for s in (pt, fab):
            zero = s.config["zero_optimization"]
            assert zero["stage"] == conf["stage"]
            assert ("offload_optimizer" in zero) == conf["offload_optimizer"]
            assert ("offload_param" in zero) == conf["offload_parameters"]
        assert fab.config["gradient_clipping"] == 1.0
    elif profile == "fsdp":
        for s in (pt, fab):
            assert s.sharding_strategy.name == conf["sharding_strategy"]
            assert s._state_dict_type == conf["state_dict_type"]
    else:
        for s in (pt, fab):
            assert s._ddp_kwargs.get("find_unused_parameters") == conf["find_unused_parameters"]


_FORBIDDEN_CALLS = {"Trainer", "Fabric", "from_pretrained"}


def _calls_outside_runtime() -> list[str]:
    out = []
    for path in sorted((ROOT / "rucai").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("rucai/runtime/"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
                if name in _FORBIDDEN_CALLS:
                    out.append(f"{rel}:{node.lineno} {name}(...)")
    return out


def test_only_the_runtime_builds_trainers_fabrics_and_loads_hf_models():
    assert _calls_outside_runtime() == []


def test_tasks_do_not_write_the_run_record():
    """metrics.json and config_resolved.yaml of a `run.py` run are the dispatcher's alone: no module that
    registers tasks writes them (stand-alone `python -m` measurement tools, which run outside the
    dispatcher, write their own result files)."""
    offenders = []
    for path in sorted((ROOT / "rucai").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel in ("rucai/dispatch.py", "rucai/launchers.py", "rucai/results.py"):
            continue
        text = path.read_text()
        if "@task(" not in text:
            continue
        for needle in ('"metrics.json"', '"config_resolved.yaml"'):
            if needle in text and ("atomic_write" in text or "open(" in text):
                offenders += [f"{rel}:{i + 1}" for i, ln in enumerate(text.splitlines())
                              if needle in ln and ("write" in ln or "open(" in ln)]
    assert offenders == []


def test_run_record_fields(tmp_path, cli):
    r = cli("experiment=quickstart", "debug=smoke", "trainer.limit_train_batches=1", run_dir=tmp_path / "run")
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for key in ("experiment", "task", "status", "start_time", "end_time", "seconds", "git_commit", "host"):
        assert key in m, key
    assert m["experiment"] == "quickstart" and m["status"] == "completed"
    assert (tmp_path / "run" / "config_resolved.yaml").is_file()


def test_failed_run_leaves_a_record(tmp_path, cli):
    r = cli("experiment=quickstart", "debug=smoke", "model.num_heads=7", run_dir=tmp_path / "run")
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert r.returncode != 0 and m["status"] == "failed" and m["error"], m


def wandb_runs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*"))
