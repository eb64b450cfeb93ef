"""UTGRec's tokenizer on the MLLM path: Qwen2-VL + LoRA reads the item, three appended code tokens.

Follows the authors' `MMTokenizerModel` (`RUCAIBox/UTGRec` `model.py`), `Collator` (`data.py`) and
`main.py`, with the same public API as `rucai.utgrec.tokenizer.TextUTGTokenizer` (`losses`, `encode`,
`codes`, `start_adaptation`) so the Lightning module and the stages take either:

- **Tokens** (`main.py`): `<CODE_0>..<CODE_{n-1}>` and `<mask>` are added to the tokenizer as special
  tokens (`add_tokens(..., special_tokens=True)`, mask token set to `<mask>`, right padding) and the
  LLM's embeddings are resized to `len(tokenizer)` (`add_code_tokens`, `resize_for_tokenizer`).
- **Encoder**: a `Qwen2VLForConditionalGeneration`; with `lora=True` (the authors' default) peft
  `LoraConfig(r=8, lora_alpha=32, lora_dropout=0.1, bias="none")` on the modules
  `find_all_linear_names` returns -- every `nn.Linear` whose qualified name contains neither "visual"
  nor "lm_head", i.e. q/k/v/o and gate/up/down of every LLM layer; the `lora_target_modules`
  argument is never read -- and `modules_to_save = embed_tokens,lm_head` (full trainable copies;
  peft unties them when the checkpoint ties them, as the 2B model does). Everything else in the LLM
  (the vision tower included) is frozen. `lora=False`: the LLM is frozen except its input and
  output embeddings (the authors' branch).
- **Prompt** (`Collator.get_batch_data`): the text cut to 1,024 tokens (encode without special
  tokens, truncate, decode), put into the image prompt or the no-image prompt, one user message
  through the chat template with the generation prompt, then the code tokens appended as text.
- **Code states**: the LLM's last-layer (post-norm) states at the code tokens -> `adapter_l2c`
  (Dropout 0.1, Linear(hidden, 768), SiLU, Dropout 0.1, Linear(768, 128)) -> `TreeQuantizer`.
- **Text decoder**: a 1-layer Qwen2-VL text model (copy of the LLM's text config with
  `num_hidden_layers=1`, hidden `decoder_hidden_size` (default: the LLM's), intermediate 4x,
  `decoder_heads` heads (default: the LLM's), eager attention, no input embeddings of its own) over
  `[adapter_c2l(quantised codes) ; text_down(embed_tokens(masked text))]` with a padding-only
  (bidirectional) additive mask; text positions -> `text_up` -> the LLM's (trainable) `lm_head`;
  CE over the masked positions. `text_down`/`text_up` are identities when the sizes match.
  `gradient_checkpointing=True` checkpoints the LLM (non-reentrant), as the authors' trainer does.
- **Losses** as the text path: total = (L_text + 5 L_img) + 0.03 (L_text_pos + 5 L_img_pos)
  + 200 L_vq + 0.01 L_cl, InfoNCE on the pre-quantisation states h.
- **Image branch** (`image_branch=True`; off by default, and then a batch that carries images
  stops in one line). The encoder sees the item's image (Qwen2-VL `pixel_values`/`image_grid_thw`
  through the processor, the image prompt); the image decoder is a second 1-layer bidirectional
  Qwen2-VL text model over `[adapter_c2l(quantised codes) ; latent tokens]`, where the latent
  tokens are `vision_proj` of the 256 (16 x 16) tokens of the frozen KL-16 VAE latent of the
  item's 256x256 centre crop (`rucai.utgrec.vae`, x 0.2325), a learned `vision_mask_token` in place
  of each masked token (`mlm_probability` 1.0: all of them); its states condition the diffusion
  loss (`rucai.utgrec.diffusion.DiffLoss`: MLP 1024 wide, 3 blocks, 4 draws per token) on the
  masked tokens. Items without an image have an all-zero mask (no image loss, the no-image
  prompt); a batch with no image at all gives 0, where the authors' masked mean is 0/0 = NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from rucai.errors import UserError
from rucai.utgrec.data import cooccurrence_neighbours, draw_example, training_items, whole_word_mask
from rucai.utgrec.quantizer import TreeQuantizer
from rucai.utgrec.tokenizer import UTGTokenizerBase, _init_weights

MASK_TOKEN = "<mask>"
# the authors' prompts (data.py `Collator.__init__`); `{}` takes the cut item text
IMAGE_PROMPT = ("This is an image of an item. The item's information also includes: {{}}. Compress the image "
                "and information into {n} tokens, representing content from coarse to fine granularity.")
NOPIC_PROMPT = ("An item is missing its corresponding image. The item's information also includes: {{}}. "
                "Compress the information into {n} tokens, representing content from coarse to fine granularity.")
MAX_TEXT_LEN = 1024  # DataArguments.max_feature_length
IMAGE_KEYS = ("pixel_values", "image_grid_thw", "input_images", "input_image_masks",
              "pos_pixel_values", "pos_image_grid_thw", "pos_input_images", "pos_input_image_masks")
BATCH_KEYS = ("item", "input_ids", "attention_mask", "code_token_indices", "pos_input_ids", "pos_attention_mask",
              "pos_code_token_indices", "text_input", "text_labels", "text_mask", "pos_text_input",
              "pos_text_labels", "pos_text_mask")
NO_IMAGE_BRANCH = ("this tokenizer has no image branch (method.tokenizer.image_branch=false); "
                   "set image_branch=true with a vae_path, or give image-free batches")
IMAGE_PAD = "<|image_pad|>"  # Qwen2-VL's image placeholder token
IMAGE_TOKENS = 256  # a 256x256 crop through the stride-16 VAE: 16 x 16 latent tokens


def code_token_names(code_num: int = 3) -> list[str]:
    return [f"<CODE_{i}>" for i in range(int(code_num))]


def add_code_tokens(tokenizer: Any, code_num: int = 3) -> dict[str, Any]:
    """`main.py`: add the code tokens and `<mask>` as special tokens, mask token `<mask>`, right
    padding. Returns {"code_token_ids", "mask_token_id", "added"}. Resize the LLM afterwards
    (`resize_for_tokenizer`)."""
    names = code_token_names(code_num)
    added = tokenizer.add_tokens(names + [MASK_TOKEN], special_tokens=True)
    tokenizer.mask_token = MASK_TOKEN
    tokenizer.padding_side = "right"
    return {"code_token_ids": [int(tokenizer.convert_tokens_to_ids(t)) for t in names],
            "mask_token_id": int(tokenizer.convert_tokens_to_ids(MASK_TOKEN)), "added": int(added)}


def resize_for_tokenizer(llm: nn.Module, tokenizer: Any) -> None:
    """`llm.resize_token_embeddings(len(tokenizer))` as `main.py` does (for Qwen2-VL-2B this also drops
    the config's unused padding rows: 151,936 -> len(tokenizer))."""
    llm.resize_token_embeddings(len(tokenizer))


def lora_target_modules(llm: nn.Module) -> list[str]:
    """The authors' `find_all_linear_names`: qualified names of every `nn.Linear` outside the vision
    tower ("visual" in the name) except `lm_head`, sorted."""
    return sorted(n for n, m in llm.named_modules()
                  if isinstance(m, nn.Linear) and "visual" not in n and "lm_head" not in n)


def text_config_of(llm: nn.Module) -> Any:
    cfg = llm.config
    return getattr(cfg, "text_config", None) or cfg


def decoder_config(llm: nn.Module, layers: int = 1, hidden_size: int | None = None, heads: int | None = None) -> Any:
    """`MMTokenizerModel.__init__`: the LLM's (text) config with `num_hidden_layers=layers`, the given
    hidden size and heads (default: the LLM's), intermediate 4x hidden, eager attention."""
    base = text_config_of(llm)
    d = base.to_dict()
    hidden = int(hidden_size or base.hidden_size)
    n_heads = int(heads or base.num_attention_heads)
    kv = int(d.get("num_key_value_heads") or n_heads)
    d.update(num_hidden_layers=int(layers), hidden_size=hidden, intermediate_size=4 * hidden,
             num_attention_heads=n_heads, num_key_value_heads=kv if n_heads % kv == 0 else n_heads)
    d.pop("layer_types", None)
    d.pop("model_type", None)
    d.pop("transformers_version", None)
    cfg = type(base)(**d)
    cfg._attn_implementation = "eager"
    return cfg


class MLLMUTGTokenizer(UTGTokenizerBase):
    """Qwen2-VL + LoRA code states, tree SimVQ, and a 1-layer Qwen2-VL masked-text decoder."""

    batch_keys = BATCH_KEYS

    def __init__(
        self,
        llm: nn.Module,
        *,
        lora: bool = True,
        lora_r: int = 8,
        lora_alpha: int = 32,
        lora_dropout: float = 0.1,
        lora_modules_to_save: Sequence[str] = ("embed_tokens", "lm_head"),
        adapter_hidden: int = 768,
        code_dim: int = 128,
        code_num: int = 3,
        root_codes: int = 256,
        leaf_codes: int = 512,
        beta: float = 0.25,
        warmup_steps: int = 300,
        decoder_layers: int = 1,
        decoder_hidden_size: int | None = None,
        decoder_heads: int | None = None,
        tau: float = 0.1,
        text_pos_weight: float = 0.03,
        vq_weight: float = 200.0,
        cl_weight: float = 0.01,
        image_weight: float = 5.0,
        gradient_checkpointing: bool = False,
        image_branch: bool = False,
        vae_path: str | None = None,
        vae_embed_dim: int = 16,
        vae_channels: int = 128,
        vae_ch_mult: Sequence[int] = (1, 1, 2, 2, 4),
        diffloss_width: int = 1024,
        diffloss_depth: int = 3,
        diffusion_batch_mul: int = 4,
    ) -> None:
        super().__init__()
        self._loss_weights(code_num, tau, text_pos_weight, vq_weight, cl_weight, image_weight)
        self.lora = bool(lora)
        tcfg = text_config_of(llm)
        hidden = int(tcfg.hidden_size)

        # the decoder's config is taken before peft wraps the model (as the authors do)
        dcfg = decoder_config(llm, decoder_layers, decoder_hidden_size, decoder_heads)
        if self.lora:
            from peft import LoraConfig, get_peft_model

            self.lora_targets = lora_target_modules(llm)
            peft_cfg = LoraConfig(inference_mode=False, r=int(lora_r), lora_alpha=int(lora_alpha),
                                  lora_dropout=float(lora_dropout), bias="none",
                                  target_modules=self.lora_targets, modules_to_save=list(lora_modules_to_save))
            self.llm = get_peft_model(llm, peft_cfg)
        else:
            self.lora_targets = []
            for p in llm.parameters():
                p.requires_grad_(False)
            for p in list(llm.get_input_embeddings().parameters()) + list(llm.get_output_embeddings().parameters()):
                p.requires_grad_(True)
            self.llm = llm

        if gradient_checkpointing:  # the authors' default (TrainingArguments.gradient_checkpointing=True)
            self.base_lm().gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            self.base_lm().enable_input_require_grads()

        self.adapter_l2c = nn.Sequential(
            nn.Dropout(0.1), nn.Linear(hidden, adapter_hidden), nn.SiLU(),
            nn.Dropout(0.1), nn.Linear(adapter_hidden, code_dim))
        self.quantizer = TreeQuantizer(root_codes, leaf_codes, code_dim, beta, warmup_steps, levels=self.code_num)

        from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLTextModel

        self.lm_decoder = Qwen2VLTextModel(dcfg)
        self.lm_decoder.embed_tokens = None  # the decoder reads the LLM's (shared) embeddings
        dh = int(dcfg.hidden_size)
        self.adapter_c2l = nn.Linear(code_dim, dh)
        self.text_down = nn.Identity() if dh == hidden else nn.Linear(hidden, dh)
        self.text_up = nn.Identity() if dh == hidden else nn.Linear(dh, hidden)
        for m in (self.adapter_l2c, self.adapter_c2l, self.lm_decoder, self.text_down, self.text_up):
            m.apply(_init_weights)

        self.image_branch = bool(image_branch)
        if self.image_branch:
            from rucai.utgrec.diffusion import DiffLoss
            from rucai.utgrec.vae import load_image_encoder

            if vae_path is None:
                raise UserError("image_branch=true needs method.tokenizer.vae_path (MAR's kl16.ckpt; "
                                "'random' for a random-weight encoder in tests)")
            self.vae = load_image_encoder(None if vae_path == "random" else vae_path, int(vae_embed_dim),
                                          ch=int(vae_channels), ch_mult=tuple(vae_ch_mult))
            self.vision_decoder = Qwen2VLTextModel(dcfg)
            self.vision_decoder.embed_tokens = None
            self.vision_mask_token = nn.Parameter(torch.zeros(1, 1, dh).normal_(0.0, 0.02))
            self.vision_proj = nn.Linear(int(vae_embed_dim), dh)
            for m in (self.vision_decoder, self.vision_proj):
                m.apply(_init_weights)
            self.diffloss = DiffLoss(int(vae_embed_dim), dh, int(diffloss_width), int(diffloss_depth),
                                     batch_mul=int(diffusion_batch_mul))

    # -- shared modules of the LLM (not registered twice: one copy in the state dict) ---------
    def base_lm(self) -> nn.Module:
        """The Qwen2VLForConditionalGeneration (peft's wrapped base model on the LoRA path)."""
        return self.llm.get_base_model() if self.lora else self.llm

    def word_embeddings(self) -> nn.Module:
        return self.base_lm().get_input_embeddings()

    def lm_head(self) -> nn.Module:
        return self.base_lm().lm_head

    # -- pieces ----------------------------------------------------------------------------
    def _refuse_images(self, batch: dict) -> None:
        if not self.image_branch and any(batch.get(k) is not None for k in IMAGE_KEYS):
            raise UserError(NO_IMAGE_BRANCH)

    def check_batch(self, batch: dict) -> None:
        self._refuse_images(batch)
        super().check_batch(batch)

    def item_states(self, batch: dict, prefix: str = "") -> torch.Tensor:
        self._refuse_images(batch)
        return self.code_states(batch[f"{prefix}input_ids"], batch[f"{prefix}attention_mask"],
                                batch[f"{prefix}code_token_indices"], batch.get(f"{prefix}pixel_values"),
                                batch.get(f"{prefix}image_grid_thw"))

    def code_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, code_token_indices: torch.Tensor,
                    pixel_values: torch.Tensor | None = None, image_grid_thw: torch.Tensor | None = None) -> torch.Tensor:
        """`encode_item` + `adapter_l2c`: h [B, code_num, code_dim]; the images (if any) through the
        vision tower into their placeholder tokens."""
        inner = self.base_lm().model  # Qwen2VLModel (vision tower + language model), no LM head
        extra: dict[str, Any] = {}
        if pixel_values is not None:  # M-RoPE needs each token's modality (1 = image placeholder)
            image_id = int(self.base_lm().config.image_token_id)
            extra = {"pixel_values": pixel_values, "image_grid_thw": image_grid_thw,
                     "mm_token_type_ids": (input_ids == image_id).int()}
        out = inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, return_dict=True, **extra)
        hid = out.last_hidden_state
        b, _, d = hid.shape
        idx = code_token_indices.long().view(b, -1, 1).expand(b, code_token_indices.shape[1], d)
        states = torch.gather(hid, 1, idx)
        w = self.adapter_l2c[1].weight
        return self.adapter_l2c(states.to(w.dtype))

    @staticmethod
    def _bidirectional(decoder: nn.Module, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Last states of a 1-layer decoder over x [B, S, d], every position seeing every kept one."""
        add = torch.zeros(keep.shape, dtype=x.dtype, device=x.device)
        add = add.masked_fill(~keep, torch.finfo(x.dtype).min)[:, None, None, :]  # [B, 1, 1, S]
        masks = {"full_attention": add, "sliding_attention": add}  # prepared: no causal mask is built
        return decoder(inputs_embeds=x, attention_mask=masks, use_cache=False).last_hidden_state

    def text_loss(self, codes_q: torch.Tensor, text_input: torch.Tensor, text_labels: torch.Tensor,
                  text_mask: torch.Tensor) -> torch.Tensor:
        """`decode_item`'s text part: masked-token CE of the text decoded from quantised codes."""
        b, n = codes_q.shape[:2]
        c = self.adapter_c2l(codes_q)
        emb = self.text_down(self.word_embeddings()(text_input))
        x = torch.cat([c, emb.to(c.dtype)], dim=1)
        keep = torch.cat([text_mask.new_ones(b, n, dtype=torch.bool), text_mask.bool()], dim=1)
        hid = self.text_up(self._bidirectional(self.lm_decoder, x, keep)[:, n:])
        labelled = text_labels != -100
        if not bool(labelled.any()):
            return hid.sum() * 0.0
        logits = self.lm_head()(hid[labelled])
        return F.cross_entropy(logits.float(), text_labels[labelled])

    def image_loss(self, codes_q: torch.Tensor, batch: dict, positive: bool = False) -> torch.Tensor:
        """`decode_item`'s image part: the diffusion loss of the masked VAE latent tokens of the
        (positive's, `positive=True`) image, decoded from the anchor's quantised codes."""
        pre = "pos_" if positive else ""
        images, masks = batch.get(f"{pre}input_images"), batch.get(f"{pre}input_image_masks")
        if not self.image_branch or images is None:
            return codes_q.new_zeros(())
        if masks is None:
            raise UserError(f"the batch has {pre}input_images but no {pre}input_image_masks")
        masks = masks.to(codes_q.device)  # all zero when no item has an image: DiffLoss gives 0, not NaN
        from rucai.utgrec.vae import patchify

        n = codes_q.shape[1]
        c = self.adapter_c2l(codes_q)
        gt = patchify(self.vae(images)).to(c.dtype)  # [B, T, C], frozen encoder
        if gt.shape[1] != masks.shape[1]:
            raise UserError(f"{gt.shape[1]} latent tokens per image but masks of {masks.shape[1]}: "
                            "the crop size and the VAE stride disagree")
        x = self.vision_proj(gt)
        x = torch.where(masks[..., None].bool(), self.vision_mask_token.to(x.dtype).expand_as(x), x)
        x = torch.cat([c, x], dim=1)
        hid = self._bidirectional(self.vision_decoder, x, torch.ones(x.shape[:2], dtype=torch.bool, device=x.device))
        return self.diffloss(gt.float(), hid[:, n:].float(), masks.float())


# ------------------------------------------------------------------------------------------- data

def cut_text(tokenizer: Any, text: str, max_len: int = MAX_TEXT_LEN) -> str:
    """`Collator.cut_text`: encode without special tokens, keep `max_len` tokens, decode."""
    ids = tokenizer.encode(text, add_special_tokens=False, max_length=int(max_len), truncation=True)
    return tokenizer.decode(ids, skip_special_tokens=True)


def prompt_text(tokenizer: Any, text: str, code_num: int = 3, max_len: int = MAX_TEXT_LEN,
                image: bool = False) -> str:
    """The encoder input as text: the (no-)image prompt as one user message through the chat template
    (generation prompt on), then the code tokens. `image=True`: an image entry before the text, which
    Qwen2-VL's template renders as `<|vision_start|><|image_pad|><|vision_end|>`."""
    cut = cut_text(tokenizer, text, max_len)
    if image:
        content = [{"type": "image"}, {"type": "text", "text": IMAGE_PROMPT.format(n=int(code_num)).format(cut)}]
    else:
        content = [{"type": "text", "text": NOPIC_PROMPT.format(n=int(code_num)).format(cut)}]
    chat = tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                         add_generation_prompt=True)
    return chat + "".join(code_token_names(code_num))


def load_image(path: Any) -> Any:
    """The item's image as RGB, or None when there is no file or it cannot be read (the authors print
    and go on with the no-image prompt)."""
    if path is None:
        return None
    from pathlib import Path

    from PIL import Image

    if not Path(path).is_file():
        return None
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except OSError:
        return None


def masking_vocab(tokenizer: Any, code_token_ids: Sequence[int], word_boundary: str = "token"):
    """(continuation [V] bool, special ids, random candidates) for `whole_word_mask`.

    The authors run `DataCollatorForWholeWordMask` on Qwen's byte-level BPE tokens, whose words are
    "a token plus the following '##' pieces": no Qwen token starts with "##", so every token is its
    own word (`word_boundary="token"`, the default). `"space"` groups a "Ġ"-initial token with the
    pieces that follow it (a real whole-word mask; not what the authors run). Special ids: the
    tokenizer's special tokens, pad, eos, `<mask>` and the code tokens (`Collator.special_token_ids`);
    random candidates: every other id of `len(tokenizer)`."""
    n = len(tokenizer)
    special = set(int(i) for i in tokenizer.all_special_ids)
    for t in (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(MASK_TOKEN)):
        if t is not None:
            special.add(int(t))
    special |= {int(i) for i in code_token_ids}
    if word_boundary == "token":
        cont = torch.zeros(n, dtype=torch.bool)
    elif word_boundary == "space":
        toks = tokenizer.convert_ids_to_tokens(list(range(n)))
        cont = torch.tensor([bool(t) and not t.startswith("Ġ") for t in toks], dtype=torch.bool)
    else:
        raise UserError(f"word_boundary={word_boundary!r}; use token (the authors') or space")
    cand = torch.tensor(sorted(set(range(n)) - special), dtype=torch.long)
    return cont, sorted(special), cand


class MLLMItemDataset(Dataset):
    """One example per item for the MLLM path: the item and a co-occurrence positive (as
    `UTGItemDataset`), each as prompt ids ending in the code tokens and a whole-word-masked decoder
    text (`tokenizer.encode(text, max_length=1024, truncation=True)`, masking rate 1.0). `texts[i]` is
    item i's sentence (row 0 unused). Draws are seeded by (seed, epoch, index) like the text path."""

    def __init__(self, texts: Sequence[str], sequences: Sequence[Sequence[int]], tokenizer: Any,
                 code_token_ids: Sequence[int], items: str | Sequence[int] = "train", seed: int = 0,
                 mlm_probability: float = 1.0, max_text_len: int = MAX_TEXT_LEN, word_boundary: str = "token",
                 images: Sequence[Any] | None = None, image_processor: Any = None, image_size: int = 256,
                 image_tokens: int = IMAGE_TOKENS, flip: bool = True):
        n_items = len(texts) - 1
        if isinstance(items, str):
            if items == "train":
                items = training_items(sequences)
            elif items == "all":
                items = list(range(1, n_items + 1))
            else:
                raise UserError(f"items={items!r}; use items=train (the authors') or items=all")
        self.items = [int(i) for i in items]
        if any(not 1 <= i <= n_items for i in self.items):
            raise UserError(f"item ids must lie in 1..{n_items} (the item texts)")
        if not 0.0 < mlm_probability <= 1.0:
            raise UserError(f"mlm_probability={mlm_probability} must lie in (0, 1]; the authors use 1.0")
        self.texts, self.tok = list(texts), tokenizer
        self.code_ids = [int(i) for i in code_token_ids]
        self.seed, self.rate, self.max_len = int(seed), float(mlm_probability), int(max_text_len)
        self.neighbours = cooccurrence_neighbours(sequences, n_items)
        self.continuation, self.special, self.candidates = masking_vocab(tokenizer, self.code_ids, word_boundary)
        self.mask_id = int(tokenizer.convert_tokens_to_ids(MASK_TOKEN))
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        # the image branch: images[i] = item i's image file or None (row 0 unused); the image processor
        # gives the encoder's pixel inputs, the VAE crop (train: a seeded horizontal flip) and the
        # latent-token mask (ceil(rate x tokens) positions, seeded) go to the image decoder
        if images is not None:
            if len(images) != len(texts):
                raise UserError(f"{len(images)} image entries for {len(texts)} item rows (row 0 unused)")
            if image_processor is None:
                raise UserError("images need the model's image processor (AutoImageProcessor of the Qwen2-VL folder)")
        self.images, self.image_processor = (list(images) if images is not None else None), image_processor
        self.image_size, self.image_tokens, self.flip = int(image_size), int(image_tokens), bool(flip)

    def __len__(self) -> int:
        return len(self.items)

    def encoded(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(prompt ids ending in the code tokens, decoder text ids) of one item, cached."""
        if item not in self._cache:
            text = self.texts[item]
            p = self.tok(prompt_text(self.tok, text, len(self.code_ids), self.max_len),
                         add_special_tokens=False)["input_ids"]
            if list(p[-len(self.code_ids):]) != self.code_ids:
                raise UserError(f"item {item}: the prompt does not end in the code tokens; "
                                "add them with rucai.utgrec.mllm.add_code_tokens first")
            d = self.tok.encode(text, max_length=self.max_len, truncation=True)
            self._cache[item] = (torch.tensor(p, dtype=torch.long), torch.tensor(d, dtype=torch.long))
        return self._cache[item]

    def with_image(self, item: int, image: Any) -> dict[str, torch.Tensor]:
        """The encoder input of an item with its image, as Qwen2-VL's processor builds it: the image
        prompt through the chat template, its one `<|image_pad|>` repeated once per merged patch
        (grid t x h x w / merge^2), `pixel_values` and `image_grid_thw` from the image processor."""
        text = prompt_text(self.tok, self.texts[item], len(self.code_ids), self.max_len, image=True)
        if text.count(IMAGE_PAD) != 1:
            raise UserError(f"the chat template rendered {text.count(IMAGE_PAD)} {IMAGE_PAD} for one image; "
                            "use the Qwen2-VL tokenizer's template")
        enc = self.image_processor(images=[image], return_tensors="pt")
        grid = enc["image_grid_thw"]
        merge = int(getattr(self.image_processor, "merge_size", 2))
        text = text.replace(IMAGE_PAD, IMAGE_PAD * (int(grid[0].prod()) // merge ** 2))
        ids = torch.tensor(self.tok(text, add_special_tokens=False)["input_ids"], dtype=torch.long)
        if list(ids[-len(self.code_ids):]) != self.code_ids:
            raise UserError(f"item {item}: the image prompt does not end in the code tokens")
        return {"input_ids": ids, "pixel_values": enc["pixel_values"], "image_grid_thw": grid}

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        item, pos, g = draw_example(key, self.items, self.neighbours, self.seed)
        out: dict[str, Any] = {"item": item, "pos": pos}
        for pre, it in (("", item), ("pos_", pos)):
            ids, dec = self.encoded(it)
            t, lab = whole_word_mask(dec, self.continuation, self.special, self.mask_id, self.candidates, g, self.rate)
            out[f"{pre}input_ids"], out[f"{pre}text_input"], out[f"{pre}text_labels"] = ids, t, lab
            if self.images is None:
                continue
            image = load_image(self.images[it])
            mask = torch.zeros(self.image_tokens)
            if image is None:  # the no-image prompt, a blank crop, nothing to reconstruct
                out[f"{pre}input_images"] = torch.zeros(3, self.image_size, self.image_size)
                out[f"{pre}pixel_values"] = out[f"{pre}image_grid_thw"] = None
            else:
                from rucai.utgrec.vae import image_tensor

                enc = self.with_image(it, image)
                out[f"{pre}input_ids"] = enc["input_ids"]
                out[f"{pre}pixel_values"], out[f"{pre}image_grid_thw"] = enc["pixel_values"], enc["image_grid_thw"]
                flip = self.flip and bool(torch.rand((), generator=g) < 0.5)
                out[f"{pre}input_images"] = image_tensor(image, self.image_size, flip=flip)
                k = int(math.ceil(self.image_tokens * self.rate))
                mask[torch.randperm(self.image_tokens, generator=g)[:k]] = 1.0
            out[f"{pre}input_image_masks"] = mask
        return out


def _pad(rows: list[torch.Tensor], value: int) -> tuple[torch.Tensor, torch.Tensor]:
    t = max(len(r) for r in rows)
    out = torch.full((len(rows), t), value, dtype=rows[0].dtype)
    mask = torch.zeros(len(rows), t, dtype=torch.bool)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
        mask[i, : len(r)] = True
    return out, mask


def collate_mllm(batch: list[dict[str, Any]], pad_token_id: int, code_num: int = 3) -> dict[str, torch.Tensor]:
    """Right-pad (the authors' padding side): `input_ids`/`attention_mask` (long) and
    `code_token_indices` [B, code_num] (the last `code_num` real positions of each row, where the
    code tokens are), the same for `pos_`; `text_input`/`text_labels` (-100 = none)/`text_mask`."""
    out: dict[str, torch.Tensor] = {"item": torch.tensor([b["item"] for b in batch], dtype=torch.long)}
    for p in ("", "pos_"):
        ids, m = _pad([b[f"{p}input_ids"] for b in batch], int(pad_token_id))
        lens = m.sum(1)
        out[f"{p}input_ids"], out[f"{p}attention_mask"] = ids, m.long()
        out[f"{p}code_token_indices"] = lens[:, None] - int(code_num) + torch.arange(int(code_num))[None, :]
        out[f"{p}text_input"], out[f"{p}text_mask"] = _pad([b[f"{p}text_input"] for b in batch], int(pad_token_id))
        out[f"{p}text_labels"], _ = _pad([b[f"{p}text_labels"] for b in batch], -100)
        if f"{p}input_images" in batch[0]:  # the image branch: crops, masks, the encoder's image inputs
            out[f"{p}input_images"] = torch.stack([b[f"{p}input_images"] for b in batch])
            out[f"{p}input_image_masks"] = torch.stack([b[f"{p}input_image_masks"] for b in batch])
            pix = [b[f"{p}pixel_values"] for b in batch if b[f"{p}pixel_values"] is not None]
            out[f"{p}pixel_values"] = torch.cat(pix) if pix else None
            out[f"{p}image_grid_thw"] = (torch.cat([b[f"{p}image_grid_thw"] for b in batch
                                                    if b[f"{p}image_grid_thw"] is not None]) if pix else None)
    return {k: out[k] for k in BATCH_KEYS + IMAGE_KEYS if k in out}


def item_image_files(data: Any, image_dir: Any) -> list[Any]:
    """Row i = item i's `<image_dir>/<parent_asin>.jpg` (None for row 0 and items without an ASIN;
    a missing file means "no image" at load time, as the authors)."""
    from pathlib import Path

    if image_dir is None:
        raise UserError("method.tokenizer.image_branch=true needs method.tokenizer.image_dir (a folder of "
                        "<parent_asin>.jpg: python -m rucai.data.download amazon23-images)")
    d = Path(image_dir)
    if not d.is_dir():
        raise UserError(f"image folder {d} not found: python -m rucai.data.download amazon23-images "
                        "--category <Category> --data-dir <amazon23 folder> --out " + str(d))
    rows: list[Any] = [None]
    for i in range(1, int(data.num_items) + 1):
        asin = (data.item_text.get(i) or {}).get("parent_asin")
        rows.append(d / f"{asin}.jpg" if asin else None)
    return rows


def load_mllm(path: str, hardware: Any = None, *, dtype: Any = "auto", device: str | None = None,
              code_num: int = 3) -> tuple[nn.Module, Any, dict[str, Any]]:
    """(Qwen2-VL model, tokenizer with the code tokens added, token ids) through `rucai.runtime`;
    bf16 on GPU (`dtype=auto`), embeddings resized to the tokenizer."""
    from rucai.runtime import load_image_text_lm, load_tokenizer

    llm = load_image_text_lm(path, hardware, dtype=dtype, device=device)
    tok = load_tokenizer(path)
    ids = add_code_tokens(tok, code_num)
    resize_for_tokenizer(llm, tok)
    return llm, tok, ids


__all__ = ["MLLMUTGTokenizer", "MLLMItemDataset", "collate_mllm", "add_code_tokens", "resize_for_tokenizer",
           "lora_target_modules", "decoder_config", "prompt_text", "cut_text", "masking_vocab", "load_mllm",
           "IMAGE_PROMPT", "NOPIC_PROMPT", "MASK_TOKEN", "load_image", "item_image_files", "IMAGE_TOKENS"]
