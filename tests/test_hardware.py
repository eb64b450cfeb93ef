"""Hardware profiles: each composes, builds its strategy object, and fails clearly without GPUs."""

import pytest
from omegaconf import OmegaConf

from rucai import cli
from rucai.errors import UserError
from rucai.runtime import hardware
from tests.conftest import compose_config

PROFILES = cli.options(cli.CONF_DIR / "hardware")


def _hw(name):
    return compose_config(f"hardware={name}").hardware


def _launcher(*overrides):
    """The resolved `hydra.launcher` node, as Hydra instantiates it for a sweep."""
    cfg = compose_config(*overrides, hydra_config=True)
    return cfg, OmegaConf.to_container(cfg.hydra.launcher, resolve=True)


def test_all_profiles_listed():
    assert {"cpu", "gpu", "ddp", "deepspeed_stage_2", "deepspeed_stage_3", "deepspeed_stage_3_offload",
            "fsdp", "vllm", "8xh200_sharded", "ddp_cpu"} <= set(PROFILES)
    assert not [p for p in PROFILES if p.startswith("slurm")], "where it runs is cluster=..., not hardware=..."
    assert set(cli.options(cli.CONF_DIR / "cluster")) == {"local", "slurm"}


@pytest.mark.parametrize("name", PROFILES)
def test_profile_is_consistent(name):
    hw = _hw(name)
    assert hw.name == name
    if hw.accelerator == "cpu":
        assert not hw.needs_gpu and hw.precision == "32-true"
    else:
        assert hw.needs_gpu, "GPU profiles must declare needs_gpu so CPU machines fail early"


@pytest.mark.parametrize("stage,offload", [("deepspeed_stage_2", False), ("deepspeed_stage_3", False),
                                           ("deepspeed_stage_3_offload", True)])
def test_deepspeed_strategy_objects(stage, offload):
    pytest.importorskip("deepspeed")
    from lightning.pytorch.strategies import DeepSpeedStrategy

    s = hardware.build_strategy(_hw(stage))
    assert isinstance(s, DeepSpeedStrategy)
    zero = s.config["zero_optimization"]
    assert type(s.config) is dict and type(zero) is dict  # plain dicts, not DictConfig
    assert zero["stage"] == int(stage.split("_")[2])
    assert ("offload_optimizer" in zero) == offload and ("offload_param" in zero) == offload
    if offload:
        assert zero["offload_optimizer"]["device"] == "cpu" and zero["offload_param"]["device"] == "cpu"


def test_fsdp_and_ddp_strategy_objects():
    from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy

    f = hardware.build_strategy(_hw("fsdp"))
    assert isinstance(f, FSDPStrategy) and f.sharding_strategy.name == "FULL_SHARD"
    d = hardware.build_strategy(_hw("ddp"))
    assert isinstance(d, DDPStrategy)
    assert hardware.build_strategy(_hw("cpu")) == "auto"


GPU_PROFILES = [p for p in PROFILES if _hw(p).accelerator != "cpu"]


def test_cluster_slurm_wires_launcher_to_hardware():
    cfg, launcher = _launcher("cluster=slurm", "hardware=deepspeed_stage_3", "hardware.devices=8",
                              "hardware.num_nodes=2", "slurm.mem_gb=64")
    assert launcher["_target_"] == "hydra_plugins.rucai_launchers.SlurmLauncher"
    assert launcher["nodes"] == cfg.hardware.num_nodes == 2
    assert launcher["tasks_per_node"] == launcher["gpus_per_node"] == 8
    assert launcher["mem_gb"] == 64 and cfg.ckpt_path == "last"


@pytest.mark.parametrize("overrides,tasks,gpus", [
    (["hardware=vllm", "hardware.devices=4"], 1, 4),            # one engine holding the GPUs
    (["hardware=8xh200_sharded"], 1, 8),                        # one process, device_map over 8
    (["hardware=ddp", "hardware.devices=4"], 4, 4),             # one process per GPU
    (["hardware=fsdp", "hardware.devices=[0,1]"], 2, 2),        # a list of device ids
    (["hardware=gpu"], 1, 1),
    ([], 1, None),                                              # hardware=cpu: no --gpus-per-node line
    (["hardware=ddp_cpu"], 2, None),
])
def test_cluster_slurm_tasks_and_gpus(overrides, tasks, gpus):
    cfg, launcher = _launcher("cluster=slurm", *overrides)
    assert (launcher["nodes"], launcher["tasks_per_node"], launcher["gpus_per_node"]) == (1, tasks, gpus)
    if cfg.hardware.name == "vllm":
        assert cfg.hardware.tensor_parallel_size == 4


def test_cpu_job_sbatch_has_no_gpu_line(tmp_path):
    from submitit.slurm.slurm import _make_sbatch_string

    _, launcher = _launcher("cluster=slurm")
    script = _make_sbatch_string("true", tmp_path, nodes=launcher["nodes"], ntasks_per_node=launcher["tasks_per_node"],
                                 gpus_per_node=launcher["gpus_per_node"])
    assert "--ntasks-per-node=1" in script and "gpus" not in script


@pytest.mark.parametrize("devices", ["auto", "0", "-1"])
def test_cluster_slurm_needs_integer_devices(devices):
    with pytest.raises(SystemExit) as e:  # one line, before anything is submitted
        _launcher("cluster=slurm", "hardware=deepspeed_stage_2", f"hardware.devices={devices}")
    assert str(e.value).startswith("error: cluster=slurm needs hardware.devices=<GPUs per node> (an integer")


def test_cluster_local_keeps_hydra_launcher():
    cfg, launcher = _launcher("hardware=ddp", "hardware.devices=auto")
    assert "rucai_launchers" not in launcher["_target_"] and cfg.ckpt_path is None


@pytest.mark.parametrize("name", GPU_PROFILES)
def test_gpu_profiles_fail_in_one_line_without_gpus(name):
    with pytest.raises(UserError) as e:
        hardware.check(_hw(name), n_gpus=0)
    assert str(e.value).startswith(f"hardware={name} needs CUDA GPUs; none visible")


def test_too_many_devices_requested():
    hw = _hw("ddp")
    hw.devices = 8
    with pytest.raises(UserError, match="asks for 8 GPUs but 2 are visible"):
        hardware.check(hw, n_gpus=2)
    hardware.check(hw, n_gpus=8)
    hardware.check(_hw("cpu"), n_gpus=0)


def test_sweep_dirs_resolve_before_hydra_sets_its_config():
    """A sweep resolves `hydra.sweep.dir` (and the SLURM launcher its submitit folder) before Hydra
    sets the HydraConfig singleton, so neither may go through the `${hydra:...}` resolver."""
    from hydra.core.hydra_config import HydraConfig

    cfg = compose_config("experiment=sasrec/office", "cluster=slurm", hydra_config=True)
    HydraConfig.instance().cfg = None
    try:
        assert "/sasrec/office/multirun/" in str(cfg.hydra.sweep.dir)
        assert "/sasrec/office/runs/" in str(cfg.hydra.run.dir)
        assert str(cfg.hydra.launcher.submitit_folder).endswith("/.submitit/%j")
    finally:
        HydraConfig.instance().set_config(cfg)


def test_cpu_profiles_pin_glibc_mmap_threshold(monkeypatch):
    """glibc accepts the call (mallopt returns 0 for an unknown parameter); a user's own
    MALLOC_MMAP_THRESHOLD_ is left alone."""
    import platform

    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    assert hardware.fix_malloc_mmap_threshold() is True
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert hardware.fix_malloc_mmap_threshold() is False
