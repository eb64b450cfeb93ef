"""Hardware profiles: each composes, builds its strategy object, and fails clearly without GPUs."""

import pytest
from hydra import compose, initialize_config_dir

from rucai import cli, schema
from rucai.runtime import hardware
from rucai.errors import UserError

schema.register()
PROFILES = cli.options(cli.CONF_DIR / "hardware")


def _hw(name):
    with initialize_config_dir(version_base="1.3", config_dir=str(cli.CONF_DIR)):
        return compose("config", overrides=[f"hardware={name}"]).hardware


def test_all_profiles_listed():
    assert {"cpu", "gpu", "ddp", "deepspeed_stage_2", "deepspeed_stage_3", "deepspeed_stage_3_offload",
            "fsdp"} <= set(PROFILES)


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


def test_slurm_profiles_wire_launcher_to_hardware():
    with initialize_config_dir(version_base="1.3", config_dir=str(cli.CONF_DIR)):
        cfg = compose("config", overrides=["hardware=slurm_multinode", "hardware.devices=4", "slurm.mem_gb=64"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.rucai_launchers.SlurmLauncher"
    assert launcher.nodes == cfg.hardware.num_nodes == 2
    assert launcher.tasks_per_node == launcher.gpus_per_node == cfg.hardware.devices == 4
    assert launcher.mem_gb == 64 and cfg.ckpt_path == "last"
    assert "slurm_gpu" in GPU_PROFILES and "slurm_8gpu" in GPU_PROFILES and "slurm" not in GPU_PROFILES


def test_slurm_vllm_is_one_task_with_all_gpus():
    with initialize_config_dir(version_base="1.3", config_dir=str(cli.CONF_DIR)):
        cfg = compose("config", overrides=["hardware=slurm_vllm", "hardware.devices=4"], return_hydra_config=True)
    assert cfg.hydra.launcher.tasks_per_node == 1 and cfg.hydra.launcher.gpus_per_node == 4
    assert cfg.hardware.tensor_parallel_size == 4


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
