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
    """One RQ-VAE (`rucai.rec.rqvae.RQVAEConfig`; the seed comes from `tokenizers.seed`). The authors'
    recipe (tokenizer/config.yaml, layers.py, trainer.py, main.py); the RQ-VAE is fit on the training
    items (items[:-2] of every user) and tokenizes all items."""

    layers: list[int] = field(default_factory=lambda: [2048, 1024, 512, 256, 128])  # hidden_sizes
    e_dim: Any = None  # null: the latent is the last entry of layers (authors); an int appends a layer
    num_codes: list[int] = field(default_factory=lambda: [256, 256, 256])  # n_codebooks 3 x codebook_size 256
    dropout: float = 0.0
    beta: float = 0.25
    quant_loss_weight: float = 1.0
    kmeans_init: bool = True
    kmeans_init_on: str = "all"  # authors: generate_codebook = KMeans on every training item's latent
    kmeans_iters: int = 100  # authors: sklearn KMeans(n_init="auto"), max_iter 300; ours torch Lloyd
    ema: bool = True  # vq_type: ema (decay 0.99, eps 1e-5)
    ema_decay: float = 0.99
    optimizer: str = "adagrad"  # learner: adagrad
    lr: float = 1e-3
    lr_schedule: str = "constant"  # scheduler_type: constant, warmup_steps 0
    weight_decay: float = 0.0
    init: str = "torch_default"  # their MLP keeps nn.Linear's default init (LC-Rec: xavier_normal)
    batch_size: int = 2048
    epochs: int = 10000
    device: str = "auto"  # authors: GPU (CUDA_VISIBLE_DEVICES=0); auto = cuda when available


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
    tau: float = 1.0  # authors sweep 1, 3, 5 (pretrain.sh TAU_LIST)
    stages: list[int] = field(default_factory=lambda: [60, 20, 20, 20, 20, 20, 20])  # epoch_per_stage
    epochs: int = 200
    lr: float = 5e-3
    # examples per optimizer step: accelerate on 4 GPUs x train_batch_size 256 = 1,024. The task
    # accumulates effective / (data.batch_size x world size) batches per step; null: no accumulation
    effective_batch_size: Any = 1024
    # optimizer steps. Authors: warmup_steps 10,000 scheduler steps, but accelerate's prepared
    # scheduler steps num_processes (4) times per optimizer step (split_batches=False), and the cosine
    # length is len(un-prepared loader at 256) x epochs scheduler steps = the true optimizer-step count
    # at 1,024: so 10,000 / 4 = 2,500 optimizer steps of warm-up, then cosine to 0 at the last step
    warmup_steps: int = 2500
    max_grad_norm: float = 1.0
    train_mode: bool = True  # influence gradients with dropout on, as the authors
    influence_train_examples: Any = None  # null: the whole training set (authors)
    influence_val_examples: Any = None  # null: the whole validation set (authors)
    influence_batch_size: Any = "${data.batch_size}"  # the training batch size
    val_users: Any = None  # per-tokenizer validation after pre-training; null: all users
    # epochs after which the T5 weights are kept (pretrain/t5_epNNN.pt) for `mtgrec.finetune_grid`;
    # authors: save_interval 10 (every 10th epoch), of which finetune.sh fine-tunes 90-120 (Instruments,
    # Scientific) or 140-160 (Games). The final weights are always kept (model.pt)
    save_epochs: list[int] = field(default_factory=lambda: [90, 100, 110, 120])


@dataclass
class FinetuneConfig:
    dir: Any = None  # null: <run dir>/finetune
    # best (validation NDCG@10 of the pre-trained model) | last | an index. Authors' finetune.sh
    # grid-searches pre-training checkpoints x tokenizers; task=mtgrec.finetune_grid does it, selecting
    # on validation (README)
    tokenizer: Any = "best"
    # T5 weights to start from (e.g. a pretrain/t5_epNNN.pt); null: the pre-training stage's model.pt
    weights: Any = None
    # the fine-tuned model's own settings live in `model` (conf/model/tiger.yaml keys) like any TIGER:
    # its learning rate is model.lr (finetune.sh: 2e-4) and its test beams model.test_num_beams (50),
    # so `model.lr=1e-3,5e-4` sweeps the fine-tuning learning rate
    warmup_steps: int = 0  # optimizer steps (finetune.sh: 0)
    effective_batch_size: Any = 1024  # 4 GPUs x 256 (ftconfig.yaml); null: no accumulation
    epochs: int = 100
    patience: int = 10  # early stopping on the monitored validation metric (cfg.monitor)
    val_every: int = 1  # eval_interval
    val_users: Any = None  # null: all validation users (val_ratio 1.0)
    max_grad_norm: float = 1.0


@dataclass
class FinetuneGridConfig:
    """`task=mtgrec.finetune_grid`: fine-tune every (pre-training epoch, tokenizer) cell, keep the cell
    with the best validation metric (cfg.monitor) and report its test metrics. Authors (finetune.sh):
    checkpoints 90/100/110/120 x tokenizers 9986-9991 (of the 25 from epochs 9976-10000 = indices
    10-15; as written, one run per checkpoint fine-tunes those 6 jointly and tests each), then
    ensemble_results.py prints the maximum of the test results; we fine-tune one tokenizer per cell
    and select on validation (experiments/mtgrec/README.md)."""

    dir: Any = None  # null: <run dir>/finetune_grid; one sub-stage folder per cell: ep{E}_tok{K}/
    epochs: list[int] = field(default_factory=lambda: [90, 100, 110, 120])  # must be in pretrain.save_epochs
    tokenizers: list[int] = field(default_factory=lambda: [10, 11, 12, 13, 14, 15])  # tokenizer indices


@method("mtgrec")  # above @dataclass: it registers the finished dataclass
@dataclass
class MTGRecMethod:
    tokenizers: TokenizersConfig = field(default_factory=TokenizersConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    finetune_grid: FinetuneGridConfig = field(default_factory=FinetuneGridConfig)
