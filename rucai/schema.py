"""Typed schemas for the top-level config, the `hardware` group and every paper's `method`.

Registered in Hydra's ConfigStore as `rucai_schema`; `conf/config.yaml` lists it first in its
defaults, so a misspelled key or a wrong type fails at compose time with Hydra's message. Each
paper declares its method settings as a dataclass in `rucai/<paper>/config.py`, decorated with
`@method("<paper>")`; `register()` discovers those modules and stores each dataclass as the option
`method=<paper>`, which the paper's experiments select (`override /method: <paper>`).
Only dataclasses here: this module is imported on the CLI start-up path.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
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
    precision: str = "32-true"  # bf16-mixed: bf16 autocast (GPUs, and CPUs with AVX512-BF16/AMX)
    # intra-op CPU threads: null = torch's default (every core); auto = the cores not busy with other
    # work (1-minute load average) divided among this machine's parallel jobs, at least 1; or a number.
    # OMP_NUM_THREADS, when set, wins over auto. Two threads on a loaded 2-core machine are slower than one.
    threads: Any = None
    needs_gpu: bool = False  # fail early with one line when no CUDA GPU is visible
    # processes per node: per_device (DDP, DeepSpeed, FSDP: one process per GPU) or one (a single
    # process that holds every device: vLLM tensor parallel, accelerate device_map); cluster=slurm
    # requests SLURM tasks per node accordingly
    processes: str = "per_device"
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
    """Cluster request for `cluster=slurm` (wired into `hydra.launcher=rucai_slurm`).

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
    # debug=smoke sets this (a marker in the record); the smoke sizes themselves are configuration:
    # conf/debug/smoke.yaml and each paper's experiments/<paper>/debug/smoke.yaml
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
    # the paper's typed method settings (`method=<paper>`, a dataclass from rucai/<paper>/config.py)
    method: Any = None
    # generative rec: how items become code tuples (`item_tokenizer=rqvae`; rucai.rec.tokenization)
    item_tokenizer: Any = None


_METHODS: dict[str, type] = {}


def method(name: str) -> Callable[[type], type]:
    """Register a paper's method dataclass as the config option `method=<name>`."""

    def deco(cls: type) -> type:
        _METHODS[name] = cls
        ConfigStore.instance().store(group="method", name=name, node=cls)
        return cls

    return deco


def methods() -> dict[str, type]:
    _discover_methods()
    return dict(_METHODS)


def _discover_methods() -> None:
    import rucai

    for mod in pkgutil.iter_modules(rucai.__path__):
        if mod.ispkg and importlib.util.find_spec(f"rucai.{mod.name}.config") is not None:
            importlib.import_module(f"rucai.{mod.name}.config")


def _slurm_tasks(processes: str, devices: Any) -> int:
    """SLURM tasks per node for a hardware profile: one per device, or one in all."""
    if processes == "one":
        return 1
    if processes != "per_device":
        _slurm_error(f"hardware.processes={processes!r}; valid: per_device, one")
    return _slurm_devices(devices)


def _slurm_gpus(accelerator: str, devices: Any) -> int | None:
    """GPUs per node to request; None (no --gpus-per-node line) for CPU profiles."""
    if accelerator == "cpu":
        return None
    return _slurm_devices(devices)


def _slurm_devices(devices: Any) -> int:
    if isinstance(devices, str) and devices.strip().isdigit():
        devices = int(devices)
    if not isinstance(devices, str) and hasattr(devices, "__len__"):  # a list of device ids
        devices = len(devices)
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        _slurm_error(f"cluster=slurm needs hardware.devices=<GPUs per node> (an integer >= 1), not {devices!r}; "
                     f"e.g. hardware.devices=8")
    return devices


def _slurm_error(msg: str) -> None:
    # Raised while Hydra instantiates the SLURM launcher, before any job is submitted, where an
    # exception would end in Hydra's traceback: exit with the one line instead (SystemExit passes
    # through OmegaConf and Hydra untouched; Python prints the message to stderr, exit status 1).
    raise SystemExit(f"error: {msg}")


_REGISTERED = False


def register() -> None:
    global _REGISTERED
    if _REGISTERED:
        return
    from omegaconf import OmegaConf

    cs = ConfigStore.instance()
    cs.store(name="rucai_schema", node=RunConfig)
    _discover_methods()
    OmegaConf.register_new_resolver("rucai.slurm_tasks", _slurm_tasks, replace=True)
    OmegaConf.register_new_resolver("rucai.slurm_gpus", _slurm_gpus, replace=True)
    _REGISTERED = True
