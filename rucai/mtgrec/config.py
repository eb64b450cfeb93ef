"""MTGRec method settings (`method=mtgrec`): the authors' settings by default.

Sources: zhengbw0324/MTGRec `tokenizer/config.yaml` (RQ-VAE), `config/ptconfig.yaml` + `pretrain.sh`
(pre-training), `config/ftconfig.yaml` + `finetune.sh` (fine-tuning). A comment marks every value
where ours differ and why. The T5's size comes from `model` (conf/model/tiger.yaml keys), the data
(and the training batch size) from `data`. CPU-scaled values live in experiments/mtgrec/office_cpu.yaml,
smoke sizes in experiments/mtgrec/debug/smoke.yaml. Only dataclasses here: this module is imported on
the CLI start-up path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rucai.schema import method


@dataclass
class RQVAESettings:
    """One RQ-VAE (`rucai.rec.rqvae.RQVAEConfig`; the seed comes from `tokenizers.seed`)."""

    # authors: hidden_sizes [2048, 1024, 512, 256, 128] where the last entry is the latent size
    layers: list[int] = field(default_factory=lambda: [2048, 1024, 512, 256])
    e_dim: int = 128
    num_codes: list[int] = field(default_factory=lambda: [256, 256, 256])  # n_codebooks 3 x codebook_size 256
    dropout: float = 0.0
    beta: float = 0.25
    quant_loss_weight: float = 1.0
    kmeans_init: bool = True  # authors: sklearn KMeans on the first batch's latents
    kmeans_iters: int = 100
    ema: bool = True  # vq_type: ema
    ema_decay: float = 0.99
    lr: float = 1e-3  # authors: Adagrad lr 1e-3; ours: AdamW (rucai.rec.rqvae has no Adagrad option)
    weight_decay: float = 0.0
    batch_size: int = 2048
    epochs: int = 10000


@dataclass
class TokenizersConfig:
    dir: Any = None  # null: <run dir>/tokenizers; an existing stage folder shares it between runs
    mode: str = "epochs"  # epochs: the last K epochs of one RQ-VAE; random: K RQ-VAEs (ablation)
    num_tokenizers: int = 25  # authors: 25 (Instruments, Games), 15 (Scientific)
    encoder: str = "sentence-transformers/sentence-t5-base"
    fields: list[str] = field(default_factory=lambda: ["title", "features", "description", "categories", "store"])
    pca_dim: Any = 128  # sent_emb_pca 128, whitened; null: no PCA
    seed: int = 2024  # rand_seed
    rqvae: RQVAESettings = field(default_factory=RQVAESettings)


@dataclass
class PretrainConfig:
    enabled: bool = True  # false: the fine-tuning stage alone from a random init (ablation)
    dir: Any = None  # null: <run dir>/pretrain
    use: Any = "all"  # all | last (single tokenizer = TIGER) | [indices]
    curriculum: bool = True  # false: uniform tokenizer sampling throughout (ablation)
    tau: float = 1.0  # authors sweep 1, 3, 5
    stages: list[int] = field(default_factory=lambda: [60, 20, 20, 20, 20, 20, 20])  # epoch_per_stage
    epochs: int = 200
    lr: float = 5e-3
    warmup_steps: int = 10000
    max_grad_norm: float = 1.0
    train_mode: bool = True  # influence gradients with dropout on, as the authors
    influence_train_examples: Any = None  # null: the whole training set (authors)
    influence_val_examples: Any = None  # null: the whole validation set (authors)
    influence_batch_size: Any = "${data.batch_size}"  # the training batch size
    val_users: Any = None  # per-tokenizer validation after pre-training; null: all users


@dataclass
class FinetuneConfig:
    dir: Any = None  # null: <run dir>/finetune
    # best (validation NDCG@10 of the pre-trained model) | last | an index. Authors' finetune.sh
    # grid-searches 4 pre-training checkpoints x 7-8 tokenizers; we fine-tune once (README)
    tokenizer: Any = "best"
    # the fine-tuned model's own settings live in `model` (conf/model/tiger.yaml keys) like any TIGER:
    # its learning rate is model.lr (finetune.sh: 2e-4) and its test beams model.test_num_beams (50),
    # so `model.lr=1e-3,5e-4` sweeps the fine-tuning learning rate
    warmup_steps: int = 0
    epochs: int = 100
    patience: int = 10  # early stopping on the monitored validation metric (cfg.monitor)
    val_every: int = 1  # eval_interval
    val_users: Any = None  # null: all validation users (val_ratio 1.0)
    max_grad_norm: float = 1.0


@method("mtgrec")  # above @dataclass: it registers the finished dataclass
@dataclass
class MTGRecMethod:
    tokenizers: TokenizersConfig = field(default_factory=TokenizersConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
