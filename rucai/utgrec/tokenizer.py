"""UTGRec's tokenizer on the text-only CPU path.

The authors' `MMTokenizerModel` (`model.py`) reads the item through Qwen2-VL + LoRA and takes
the last-layer states at three appended code tokens. Here frozen all-MiniLM-L6-v2 token states
(precomputed per item by `rucai.utgrec.data`) are read by a small trainable bidirectional
transformer over `[3 learned code queries ; token states]`; everything after the code states
follows the authors:

- `adapter_l2c`: MLP hidden -> 768 -> 128 (dropout 0.1 before each linear, SiLU = Qwen2's
  `hidden_act`), giving the code states h [B, 3, 128];
- `TreeQuantizer` (SimVQ, differences, cumulative sum, warm-up bypass);
- `adapter_c2l`: Linear(128 -> decoder hidden); the text decoder is ONE bidirectional pre-norm
  layer (feed-forward 4x hidden, no dropout, final norm) over `[3 code states ; embeddings of
  the masked text]`, its text positions projected by the shared LM head (the word-embedding
  matrix, tied to the decoder's input embeddings, no bias). The authors' decoder is a 1-layer
  Qwen2-VL model with rotary positions; here positions are learned absolute embeddings.
  The authors' LM head and input embeddings are trainable (LoRA `modules_to_save =
  embed_tokens,lm_head`), hence `train_word_embeddings=True` by default;
- losses: masked-text CE of the item, the positive's text decoded from the ANCHOR's quantised
  codes, the VQ loss, and an InfoNCE (tau 0.1, one direction: anchor rows against positive
  columns, in-batch negatives) per code position on h, averaged over positions;
  total = (L_text + w_img L_img) + 0.03 (L_text_pos + w_img L_img_pos) + 200 L_vq + 0.01 L_cl.
  `image_loss` is the hook for the MLLM path's diffusion loss and returns 0 here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rucai.utgrec.quantizer import TreeQuantizer

BATCH_KEYS = (
    "states", "state_mask", "pos_states", "pos_state_mask", "text_input", "text_labels",
    "text_mask", "pos_text_input", "pos_text_labels", "pos_text_mask", "item",
)


def info_nce(a: torch.Tensor, b: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """The authors' `info_nce`: cosine similarities / tau, CE of row i against column i."""
    a = F.normalize(a, dim=-1)
    b = F.normalize(b, dim=-1)
    sim = a @ b.t() / tau
    return F.cross_entropy(sim, torch.arange(a.shape[0], device=a.device))


def code_info_nce(x: torch.Tensor, y: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """Mean over code positions of `info_nce(x[:, i], y[:, i])` for x, y [B, L, d]."""
    return sum(info_nce(x[:, i], y[:, i], tau) for i in range(x.shape[1])) / x.shape[1]


def _init_weights(module: nn.Module) -> None:
    """Qwen2's `_init_weights` as the authors apply it to their new modules: N(0, 0.02)."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)


class UTGTokenizerBase(nn.Module):
    """What both tokenizer paths share: the loss weights, the losses' assembly, code generation and
    the adaptation switch. A path supplies `item_states(batch, prefix)` (the pre-quantisation code
    states of the anchor, prefix "", or of the positive, "pos_"), `text_loss`, `quantizer`,
    `batch_keys`, and may refuse a batch in `check_batch`."""

    batch_keys: tuple[str, ...] = ()

    def _loss_weights(self, code_num: int, tau: float, text_pos_weight: float, vq_weight: float,
                      cl_weight: float, image_weight: float) -> None:
        self.code_num = int(code_num)
        self.tau = float(tau)
        self.text_pos_weight = float(text_pos_weight)
        self.vq_weight = float(vq_weight)
        self.cl_weight = float(cl_weight)
        self.image_weight = float(image_weight)

    def start_adaptation(self) -> None:
        """The authors' adaptation (finetune.sh): E frozen (`--fix_codebook True`), W and every
        other module trainable, no warm-up (`vq_warmup_steps = -1` when a checkpoint is loaded)."""
        self.quantizer.freeze_code_embs()
        self.quantizer.warmup_steps = -1

    def check_batch(self, batch: dict) -> None:
        missing = [k for k in self.batch_keys if k not in batch]
        if missing:
            raise KeyError(f"UTGRec batch lacks {missing}")

    def item_states(self, batch: dict, prefix: str = "") -> torch.Tensor:
        raise NotImplementedError

    def image_loss(self, codes_q: torch.Tensor, batch: dict, positive: bool = False) -> torch.Tensor:
        """Hook for the image decoder's diffusion loss; no image branch is built (0)."""
        return codes_q.new_zeros(())

    def losses(self, batch: dict) -> dict:
        """total = (L_text + w_img L_img) + w_pos (L_text,pos + w_img L_img,pos) + w_vq L_vq + w_cl L_cl."""
        self.check_batch(batch)
        h = self.item_states(batch)
        zero = h.new_zeros(())
        l_cl = zero
        if self.cl_weight > 0:
            l_cl = code_info_nce(h, self.item_states(batch, "pos_"), self.tau)
        warm = self.quantizer.in_warmup()
        q, l_vq, _ = self.quantizer(h, bypass=warm)
        l_text = self.text_loss(q, batch["text_input"], batch["text_labels"], batch["text_mask"])
        l_img = self.image_loss(q, batch)
        l_text_pos, l_img_pos = zero, zero
        if self.text_pos_weight > 0:  # the ANCHOR's codes reconstruct the positive's text (and image)
            l_text_pos = self.text_loss(q, batch["pos_text_input"], batch["pos_text_labels"], batch["pos_text_mask"])
            l_img_pos = self.image_loss(q, batch, positive=True)
        total = (l_text + self.image_weight * l_img
                 + self.text_pos_weight * (l_text_pos + self.image_weight * l_img_pos)
                 + self.vq_weight * l_vq + self.cl_weight * l_cl)
        return {"loss": total, "text": l_text, "text_pos": l_text_pos, "image": l_img,
                "image_pos": l_img_pos, "vq": l_vq, "cl": l_cl, "warmup": torch.tensor(float(warm))}

    @torch.no_grad()
    def encode(self, batch: dict) -> dict:
        """Eval-mode codes [B, L] (level-local), h, and the last difference's distances to the leaf
        entries [B, leaf_codes] (input of `collisions.resolve_collisions`); no warm-up bypass."""
        was = self.training
        self.eval()
        try:
            h = self.item_states(batch)
            _, _, codes = self.quantizer(h, bypass=False)
            return {"codes": codes, "h": h, "leaf_distances": self.quantizer.leaf_distances(h)}
        finally:
            self.train(was)

    def codes(self, batch: dict) -> torch.Tensor:
        """LongTensor [B, L] of level-local codes (no warm-up bypass, dropout off)."""
        return self.encode(batch)["codes"]


class TextUTGTokenizer(UTGTokenizerBase):
    """Three code states from frozen token states, tree SimVQ, and a masked-text decoder."""

    batch_keys = BATCH_KEYS

    def __init__(
        self,
        word_embeddings: torch.Tensor,
        *,
        state_dim: int = 384,
        head_layers: int = 2,
        head_heads: int = 4,
        head_dim: int = 384,
        head_dropout: float = 0.1,
        adapter_hidden: int = 768,
        code_dim: int = 128,
        code_num: int = 3,
        root_codes: int = 256,
        leaf_codes: int = 512,
        beta: float = 0.25,
        warmup_steps: int = 300,
        decoder_heads: int = 6,
        max_text_len: int = 512,
        train_word_embeddings: bool = True,
        tau: float = 0.1,
        text_pos_weight: float = 0.03,
        vq_weight: float = 200.0,
        cl_weight: float = 0.01,
        image_weight: float = 5.0,
    ) -> None:
        super().__init__()
        if word_embeddings.dim() != 2:
            raise ValueError("word_embeddings must be a [vocab, dim] matrix")
        self._loss_weights(code_num, tau, text_pos_weight, vq_weight, cl_weight, image_weight)
        dec_dim = word_embeddings.shape[1]

        # encoder head (stands in for Qwen2-VL + LoRA and the three code tokens)
        self.state_in = nn.Identity() if state_dim == head_dim else nn.Linear(state_dim, head_dim)
        self.code_queries = nn.Parameter(torch.empty(self.code_num, head_dim))
        layer = nn.TransformerEncoderLayer(
            head_dim, head_heads, dim_feedforward=4 * head_dim, dropout=head_dropout,
            activation="gelu", batch_first=True, norm_first=True)
        self.head = nn.TransformerEncoder(layer, head_layers, norm=nn.LayerNorm(head_dim),
                                          enable_nested_tensor=False)
        self.adapter_l2c = nn.Sequential(
            nn.Dropout(0.1), nn.Linear(head_dim, adapter_hidden), nn.SiLU(),
            nn.Dropout(0.1), nn.Linear(adapter_hidden, code_dim))

        self.quantizer = TreeQuantizer(root_codes, leaf_codes, code_dim, beta, warmup_steps,
                                       levels=self.code_num)

        # text decoder
        self.adapter_c2l = nn.Linear(code_dim, dec_dim)
        self.word_embeddings = nn.Parameter(word_embeddings.detach().clone().float(),
                                            requires_grad=train_word_embeddings)
        self.dec_positions = nn.Embedding(self.code_num + max_text_len, dec_dim)
        self.decoder = nn.TransformerEncoderLayer(
            dec_dim, decoder_heads, dim_feedforward=4 * dec_dim, dropout=0.0,
            activation="gelu", batch_first=True, norm_first=True)
        self.decoder_norm = nn.LayerNorm(dec_dim)

        for m in (self.state_in, self.head, self.adapter_l2c, self.adapter_c2l,
                  self.dec_positions, self.decoder):
            m.apply(_init_weights)
        nn.init.normal_(self.code_queries, std=0.02)

    # -- switches --------------------------------------------------------------------------
    # -- pieces ----------------------------------------------------------------------------
    def code_states(self, states: torch.Tensor, state_mask: torch.Tensor) -> torch.Tensor:
        """Pre-quantisation code states h [B, L, code_dim]."""
        x = self.state_in(states.float())
        b = x.shape[0]
        q = self.code_queries.unsqueeze(0).expand(b, -1, -1)
        pad = torch.cat([state_mask.new_zeros(b, self.code_num, dtype=torch.bool),
                         ~state_mask.bool()], dim=1)
        out = self.head(torch.cat([q, x], dim=1), src_key_padding_mask=pad)
        return self.adapter_l2c(out[:, : self.code_num])

    def item_states(self, batch: dict, prefix: str = "") -> torch.Tensor:
        return self.code_states(batch[f"{prefix}states"], batch[f"{prefix}state_mask"])

    def text_loss(self, codes_q: torch.Tensor, text_input: torch.Tensor,
                  text_labels: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """Masked-token CE of the text decoded from quantised codes [B, L, code_dim]."""
        b, s = text_input.shape
        c = self.adapter_c2l(codes_q)
        x = torch.cat([c, F.embedding(text_input, self.word_embeddings)], dim=1)
        if x.shape[1] > self.dec_positions.num_embeddings:
            raise ValueError(f"text of {s} tokens exceeds max_text_len="
                             f"{self.dec_positions.num_embeddings - self.code_num}")
        x = x + self.dec_positions.weight[: x.shape[1]]
        pad = torch.cat([text_mask.new_zeros(b, self.code_num, dtype=torch.bool),
                         ~text_mask.bool()], dim=1)
        hid = self.decoder_norm(self.decoder(x, src_key_padding_mask=pad))[:, self.code_num:]
        labelled = text_labels != -100
        if not bool(labelled.any()):
            return hid.sum() * 0.0
        logits = hid[labelled] @ self.word_embeddings.t()
        return F.cross_entropy(logits, text_labels[labelled])
