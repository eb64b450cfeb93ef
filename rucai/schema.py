"""Typed schemas for the top-level config and the `hardware` group.

Registered in Hydra's ConfigStore as `rucai_schema`; `conf/config.yaml` lists it first in its
defaults, so a misspelled key or a wrong type fails at compose time with Hydra's message.
Only dataclasses here: this module is imported on the CLI start-up path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class HardwareConfig:
    """One profile sets accelerator, devices, nodes, strategy and precision consistently."""

    name: str = "cpu"
    accelerator: str = "cpu"  # cpu | gpu | auto
    devices: Any = 1  # int, "auto" or a list of device indices
    num_nodes: int = 1
    # "auto", "ddp", ... or a mapping with `_target_` (DeepSpeedStrategy, FSDPStrategy, ...)
    strategy: Any = "auto"
    precision: str = "32-true"
    needs_gpu: bool = False  # fail early with one line when no CUDA GPU is visible
    # for LLM inference engines (vLLM): GPUs per model replica
    tensor_parallel_size: int = 1
    # one process, a model split by layers over the node's GPUs (accelerate `device_map`); for tasks
    # that load a Hugging Face model themselves (scoring, inference)
    device_map: Any = None  # "auto" | "balanced" | explicit mapping; null: one device
    max_memory: Any = None  # {gpu index | "cpu": "118GiB", ...} caps per device
    offload_folder: Any = None  # spill-over folder (slow); null: the model must fit on the GPUs


@dataclass
class PathsConfig:
    root_dir: str = "${oc.env:RUCAI_ROOT,.}"
    data_dir: str = "${oc.env:RUCAI_DATA_DIR,${paths.root_dir}/data}"
    log_dir: str = "${paths.root_dir}/outputs"
    cache_dir: str = "${oc.env:RUCAI_CACHE_DIR,${paths.root_dir}/.cache}"
    output_dir: str = "${hydra:runtime.output_dir}"
    work_dir: str = "${hydra:runtime.cwd}"


@dataclass
class MonitorConfig:
    metric: str = "val/ndcg@10"
    mode: str = "max"


@dataclass
class SlurmConfig:
    """Cluster request for `hardware=slurm*` (wired into `hydra.launcher` by those profiles).

    Put a user's defaults (partition, account, setup lines) in the git-ignored
    `conf/local/default.yaml`; override per command with `slurm.partition=...`.
    """

    partition: Any = None
    account: Any = None
    qos: Any = None
    constraint: Any = None
    time_min: int = 60
    mem_gb: Any = None  # per node
    cpus_per_task: Any = None
    # shell lines run in the sbatch script before the job (module load, conda activate, ...)
    setup: list[str] = field(default_factory=list)
    # any other sbatch option, e.g. {"mail-type": "END", "exclusive": true}
    additional_parameters: dict[str, Any] = field(default_factory=dict)
    # submitit re-queues a job that hits its time limit at most this many times (pre-emption: always)
    max_requeues: int = 3
    # seconds before the time limit at which SLURM signals the job to requeue itself
    signal_delay_s: int = 120
    array_parallelism: int = 64


@dataclass
class RunConfig:
    task: str = "train"
    experiment_name: str = "default"
    seed: int = 42
    # debug=smoke sets this: tasks without a Lightning trainer shrink themselves (see each task)
    smoke: bool = False
    tags: list[str] = field(default_factory=list)
    train: bool = True
    test: bool = True
    # null: fresh run; "last": resume from <output_dir>/checkpoints/last.ckpt; or a path
    ckpt_path: Any = None
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    data: Any = None
    model: Any = None
    trainer: Any = None
    logger: Any = None
    callbacks: Any = None
    # paper-specific groups (LLM backends, evaluation, method settings) slot in here
    llm: Any = None
    eval: Any = None
    method: Any = None


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="rucai_schema", node=RunConfig)
