"""GRSU method settings (`method=grsu`). Sources: RUCAIBox/GRSU (`search.py`, `rank.py`, configs)
and the paper; see experiments/grsu/README.md. Only dataclasses here: this module is imported on
the CLI start-up path."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rucai.schema import method


@dataclass
class CRSSettings:
    kind: str = "llm"  # llm: the backend in `llm` below (the paper: phi-4 via vLLM); retrieval: dense over titles
    llm: Any = None  # kind=llm: an `llm` group config (backend + model), e.g. {backend: vllm, model: microsoft/phi-4}
    k: int = 10  # items per recommendation
    retries: int = 5  # llm: tries for a response with exactly k items
    temperature: float = 1.0
    max_tokens: int = 256
    pool: int = 100  # retrieval: candidates the proposals are drawn from
    retrieval_temperature: float = 0.05  # retrieval: softmax temperature of the draws
    encoder: str = "all-minilm-l6-v2"  # retrieval: title encoder
    exclude_mentioned: bool = True  # never recommend an item already mentioned in the dialogue


@dataclass
class SearchSettings:
    beams: int = 4
    depth: int = 5
    expand: int = 4  # revisions per kept node
    root: int = 16  # proposals at the root
    reward: str = "simulator"  # simulator | random (the ablation)
    critique_tokens: int = 1024
    critique_temperature: float = 1.0


@dataclass
class SFTSettings:
    """Simulator fine-tuning (the authors: full fine-tune, ZeRO-3 bf16, lr 1e-6 cosine to 0.1x, 1,000
    warm-up steps, 1 epoch, max length 3,072, loss on the assistant turn only)."""

    lr: float = 1e-6
    min_lr_ratio: float = 0.1
    warmup_steps: int = 1000
    epochs: int = 1
    max_length: int = 3072
    batch_size: int = 1
    negatives_per_positive: int = 1
    lora: bool = False
    lora_r: int = 8
    max_examples: Any = None  # null: all scoring examples of the simulator-training half


@method("grsu")  # above @dataclass: it registers the finished dataclass
@dataclass
class GRSUSettings:
    data_dir: str = "${paths.data_dir}/redial"
    only_new: bool = True  # drop labels already mentioned in the dialogue
    split_seed: int = 0  # dialogs split into a simulator-training half and an evaluation half
    max_turns: Any = None  # evaluation turns (null: all of the evaluation half)
    crs: CRSSettings = field(default_factory=CRSSettings)
    search: SearchSettings = field(default_factory=SearchSettings)
    sft: SFTSettings = field(default_factory=SFTSettings)
    simulator_dir: Any = None  # a fine-tuned simulator (null: the `llm` group's model as is)
    auc_turns: int = 200  # held-out turns for the simulator's AUC (labelled vs random items)
