"""UTGRec method settings (`method=utgrec`): the tokenizer's stages (pre-training on source
domains, adaptation to the target, codes for every target item); the recommender is the TIGER of
`model` trained by the core train body on those codes.

Sources: RUCAIBox/UTGRec `pretrain.sh`, `finetune.sh`, `arguments.py` (AdamW, weight decay 0.01,
3% warm-up then linear decay, clip 1.0), `model.py`. The text-only CPU path (frozen MiniLM token
states + a small head) replaces Qwen2-VL + LoRA; see experiments/utgrec/README.md. Only dataclasses
here: this module is imported on the CLI start-up path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rucai.schema import method


@dataclass
class TokenizerSettings:
    backbone: str = "text"  # text: the CPU path below; mllm: Qwen2-VL + LoRA (rucai/utgrec/mllm.py), GPUs
    llm: str = "Qwen/Qwen2-VL-2B-Instruct"  # backbone=mllm: the model (a local folder offline)
    gradient_checkpointing: bool = True  # backbone=mllm (the authors' trainer)
    allow_cpu: bool = False  # backbone=mllm on a CPU (tiny test models only)
    # backbone=mllm, the authors' image branch: the item's image in the encoder's prompt and a second
    # decoder reconstructing its VAE latents with a diffusion loss (rucai/utgrec/{vae,diffusion}.py)
    image_branch: bool = False
    image_dir: Any = None  # <parent_asin>.jpg per item (python -m rucai.data.download amazon23-images)
    vae_path: Any = None  # MAR's KL-16 VAE (kl16.ckpt, github.com/LTH14/mar)
    image_size: int = 256  # centre crop for the VAE: 16 x 16 latent tokens
    diffloss_width: int = 1024  # diffloss_w
    diffloss_depth: int = 3  # diffloss_d
    diffusion_batch_mul: int = 4
    encoder: str = "all-minilm-l6-v2"  # backbone=text: frozen token states; authors: Qwen2-VL-2B + LoRA
    max_tokens: int = 128  # authors: text cut to 1,024 tokens
    head_layers: int = 2
    head_heads: int = 4
    code_dim: int = 128  # codebook_dim
    root_codes: int = 256  # level 1
    leaf_codes: int = 512  # levels 2-3 share it
    beta: float = 0.25
    vq_warmup_steps: int = 300
    train_word_embeddings: bool = True  # authors: embed_tokens/lm_head in modules_to_save
    tau: float = 0.1
    text_pos_weight: float = 0.03  # pos_recon_loss_weight
    vq_weight: float = 200.0  # vq_loss_weight
    cl_weight: float = 0.01  # cl_loss_weight
    mlm_probability: float = 1.0  # whole-word masking of every word
    batch_size: int = 16  # per device (authors: 16 x 16 GPUs)
    encode_batch_size: int = 64
    cache_dir: Any = None


@dataclass
class StageSettings:
    epochs: int = 3
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.03
    gradient_clip: float = 1.0
    dir: Any = None  # null: <run dir>/<stage>


@method("utgrec")  # above @dataclass: it registers the finished dataclass
@dataclass
class UTGRecSettings:
    # pre-training domain(s): a data config (`_target_` + args, e.g. conf/data/rec/ml100k.yaml's keys)
    # or a list of them (merged: items and sequences of every domain, ids offset); null: no
    # pre-training (the tokenizer is trained on the target alone)
    source: Any = None
    source_fields: Any = None  # item fields of the source's text (null: the loader's defaults)
    target_fields: Any = None
    tokenizer: TokenizerSettings = field(default_factory=TokenizerSettings)
    pretrain: StageSettings = field(default_factory=StageSettings)  # pretrain.sh: 3 epochs, lr 3e-4
    adapt: StageSettings = field(default_factory=lambda: StageSettings(epochs=40, lr=1e-4))  # finetune.sh
    codes_dir: Any = None  # null: <run dir>/codes
    # the recommender pre-trained on the source domains' code sequences (epochs 0: off); its lr
    # replaces model.lr there; the authors release no recommender (MTGRec's pre-training is 200 epochs)
    rec_pretrain: StageSettings = field(default_factory=lambda: StageSettings(epochs=10, lr=1e-3, weight_decay=0.0,
                                                                              warmup_ratio=0.0, gradient_clip=1.0))
