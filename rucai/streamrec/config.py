"""STREAM-Rec method settings (`method=streamrec`): the three training phases over a TIGER-style
T5 on semantic-ID tokens (`model=streamrec`), each a stage of the run with its own folder.

There is no public code; the paper's method section could not be read here (experiments/streamrec/
README.md lists the sources: the abstract, and secondary descriptions). Every default that is not
in those sources is marked "ours". Only dataclasses here: this module is on the CLI start-up path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rucai.schema import method

PHASES = ("pretrain", "sft", "rl")


@dataclass
class PhaseSettings:
    """One training phase: epochs (early stopping on validation NDCG@10 as every rec model), lr,
    and optional per-epoch batch limit (null: every training example once per epoch)."""

    epochs: int = 50
    lr: float = 1e-3
    patience: int = 10
    limit_train_batches: Any = None
    dir: Any = None  # null: <run dir>/<phase>


@dataclass
class PretrainSettings(PhaseSettings):
    # the target extended with the codes of `similar_items` items whose text embeddings are nearest
    # (cosine) to the target's, placed before the target (secondary source: Y = [c'_1..c'_q; target])
    similar_items: int = 1  # ours (the paper's q is not in the sources)
    order: str = "nearest_last"  # ours: the most similar item next to the target; or nearest_first
    temperature: float = 1.0  # tau of the softmax over the vocabulary (paper Eq. 11; value not in the sources)
    encoder: str = "all-minilm-l6-v2"  # item text embeddings for the similarity (the tokenizer's encoder)
    fields: Any = None  # null: the item tokenizer's fields


@dataclass
class AnnotatorSettings:
    """Stage 2's iterative inference: r_i = MLP_r(t - s_(i-1)); o_i = the code token whose embedding
    is nearest (L2) to r_i; s_i = MLP_s(s_0 + sum_j e(o_j)); trained with a state-target InfoNCE and
    a state-target distance at every step plus a commitment loss, on the frozen pre-trained T5
    (encoder states, embeddings)."""

    steps: int = 4  # l: the paper (secondary): 6 on Instruments, 4 on Scientific
    hidden: int = 256  # ours: MLP inner size
    tau: float = 0.1  # ours: InfoNCE temperature
    beta: float = 0.0  # ours: commitment weight (0: MLP_r stays the identity; 0.25 (VQ's usual) made the codes worse)
    gamma: float = 1.0  # ours: weight of mean ||s_i - t||^2 / D; 0 = InfoNCE only (directions only)
    straight_through: bool = False  # ours: r_i + sg(e(o_i) - r_i) into the state; True diverges (annotator.py)
    epochs: int = 3  # ours
    lr: float = 1e-3
    dir: Any = None  # null: <run dir>/annotator


@dataclass
class SFTSettings(PhaseSettings):
    """Stage 2's fine-tuning on [o_1..o_l ; target codes]. The secondary sources list a DPO loss
    "against the direct model" among stage 2's losses, with no form or weight. `dpo_weight` > 0 adds
    ours: chosen = the annotated thinking then the target; rejected = the same thinking then the item
    the direct (stage-1) model predicts for the user (one sample through its own free prefix and the
    trie; rows where it predicts the target are skipped); reference policy = that stage-1 model (the
    SFT's initialisation); -log sigmoid(beta x the log-ratio margin)."""

    lr: float = 5e-4
    dpo_weight: float = 0.0  # ours: off by default (form and weight not in the sources)
    dpo_beta: float = 0.1  # ours: DPO's usual value
    dpo_temperature: float = 1.0  # ours: sampling temperature of the direct model's prediction


@dataclass
class RLSettings(PhaseSettings):
    """Stage 3: GRPO (rucai.rl.core: group-normalised advantages, PPO-clip surrogate, k3 KL to the
    SFT policy) on sampled [thinking; item] outputs, rewards by name with weights."""

    epochs: int = 5
    lr: float = 1e-4  # ours
    group_size: int = 8  # ours: samples per user
    temperature: float = 1.0
    clip_eps: float = 0.2
    kl_coef: float = 0.04  # ours (GRPO's usual value)
    constrained_sampling: bool = True  # the item part sampled through the trie (always an item)
    rank_negatives: int = 9  # think_rank: random negatives the target is ranked against
    # reward name -> weight (rucai.streamrec.rewards.REWARDS); the paper lists all five, weights not
    # in the sources (ours: 1 each)
    rewards: dict[str, float] = field(default_factory=lambda: {
        "format": 1.0, "exact_match": 1.0, "similarity": 1.0, "think_likelihood": 1.0, "think_rank": 1.0})


@method("streamrec")  # above @dataclass: it registers the finished dataclass
@dataclass
class StreamRecSettings:
    last_phase: str = "rl"  # the pipeline runs pretrain -> sft -> rl up to this phase
    pretrain: PretrainSettings = field(default_factory=PretrainSettings)
    annotator: AnnotatorSettings = field(default_factory=AnnotatorSettings)
    sft: SFTSettings = field(default_factory=SFTSettings)
    rl: RLSettings = field(default_factory=RLSettings)
