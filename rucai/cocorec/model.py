"""CoCoRec / CCFRec, as the authors' code (BishopLiu/CCFRec, model.py + data.py) implements it.

Items are code tuples (`rucai.cocorec.codes`: C tokens per item, token = code + level x K + 1,
0 = padding and [mask]) plus V frozen text vectors (one per text view, PCA-whitened).

- **Fusion** (`Fusion`, Q-Former-like, `fusion_layers` layers, post-LN): self-attention over the
  item's C code embeddings, cross-attention from the codes to the item's V text vectors
  (`text_fusion=false`: codes only), then a GELU feed-forward. Sequence side: the item is the mean
  of its fused code states. Candidate side: that mean plus the mean of its raw code embeddings
  (`candidate_code_term`, the authors' `get_item_embedding` / `encode_item`).
- **Backbone**: SASRec-style (learned positions from the oldest item, LayerNorm, dropout, causal
  post-LN Transformer with GELU), user state = the last real position.
- **Losses**: L = L_rec + mlm_weight * L_MCM + cl_weight * L_MSA (`training_step`):
  L_rec: cosine / tau cross-entropy over the target and `neg_num` shared uniform negatives drawn
  without replacement from the items that are not a target in the batch (0 = every item);
  L_MCM: each history code masked with probability `mask_ratio` (80% -> 0, 10% -> a random token
  of the whole table, 10% kept), predicted by cosine / tau of its fused state against every row
  of the code table; L_MSA: symmetric in-batch InfoNCE (tau) between the user states from the
  original and from the masked codes.

Where ours departs from the released code (which does not run as shipped):
- the fusion of every item runs once per step and is gathered for the sequences and the
  candidates (the authors run it for every position twice and again for the candidates), so the
  fusion's dropout noise is shared by an item's occurrences within a step;
- ranking and the full softmax never score the padding row 0;
- masking is drawn on the model's device with torch's RNG (seeded by `seed`), not in the collator.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from rucai.errors import UserError
from rucai.models.layers import linear_cross_entropy
from rucai.models.seqrec import SeqRecModule

log = logging.getLogger(__name__)


class FusionLayer(nn.Module):
    """Self-attention over codes -> cross-attention to the text views -> FFN, each a post-LN residual."""

    def __init__(self, d: int, heads: int, inner: int, dropout: float, attn_dropout: float, eps: float,
                 text_fusion: bool = True):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=attn_dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(d, eps=eps)
        self.cross_attn = nn.MultiheadAttention(d, heads, dropout=attn_dropout, batch_first=True) if text_fusion else None
        self.norm2 = nn.LayerNorm(d, eps=eps) if text_fusion else None
        self.ffn = nn.Sequential(nn.Linear(d, inner), nn.GELU(), nn.Linear(inner, d))
        self.norm3 = nn.LayerNorm(d, eps=eps)
        self.drop = nn.Dropout(dropout)

    def forward(self, q: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        q = self.norm1(q + self.drop(self.self_attn(q, q, q, need_weights=False)[0]))
        if self.cross_attn is not None:
            q = self.norm2(q + self.drop(self.cross_attn(q, text, text, need_weights=False)[0]))
        return self.norm3(q + self.drop(self.ffn(q)))


class Fusion(nn.Module):
    def __init__(self, layers: int, **kw):
        super().__init__()
        self.layers = nn.ModuleList(FusionLayer(**kw) for _ in range(layers))

    def forward(self, codes: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """codes [n, C, D] code embeddings, text [n, V, D] view vectors -> fused [n, C, D]."""
        for layer in self.layers:
            codes = layer(codes, text)
        return codes


def mask_codes(codes: torch.Tensor, real: torch.Tensor, ratio: float, vocab: int,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked code modelling's corruption (the authors' `CCFSeqSplitDataset.__mask__`).

    codes [..., C] token ids; real [...] marks real items (padding is never masked). Each code is
    chosen with probability `ratio`; a chosen code becomes 0 ([mask]) with probability 0.8, a
    uniform token of 1..vocab-1 (any level) with 0.1, and stays with 0.1. Returns (corrupted
    codes, labels) where labels are the original token at chosen codes and -100 elsewhere."""
    dev = codes.device
    chosen = (torch.rand(codes.shape, generator=generator, device=dev) < ratio) & real.unsqueeze(-1)
    action = torch.rand(codes.shape, generator=generator, device=dev)
    rand_tok = torch.randint(1, vocab, codes.shape, generator=generator, device=dev)
    out = torch.where(chosen & (action < 0.8), torch.zeros_like(codes), codes)
    out = torch.where(chosen & (action >= 0.8) & (action < 0.9), rand_tok, out)
    labels = torch.where(chosen, codes, torch.full_like(codes, -100))
    return out, labels


def _fp32(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float32 else x.float()


def info_nce(x: torch.Tensor, y: torch.Tensor, tau: float) -> torch.Tensor:
    """In-batch InfoNCE of x against y (row i's positive is y[i]), cosine / tau."""
    logits = (F.normalize(x, dim=-1) / tau) @ F.normalize(y, dim=-1).T
    return F.cross_entropy(_fp32(logits), torch.arange(len(x), device=x.device))


class CoCoRec(SeqRecModule):
    def __init__(
        self,
        num_items: int,
        item_codes: torch.Tensor,
        text_vectors: torch.Tensor,
        code_vocab: int,
        num_codes: int | None = None,
        max_len: int = 20,
        hidden_size: int = 128,
        inner_size: int = 512,
        num_layers: int = 2,
        num_heads: int = 2,
        fusion_layers: int = 2,
        dropout: float = 0.3,
        fusion_dropout: float = 0.3,
        tau: float = 0.07,
        neg_num: int = 0,
        mlm_weight: float = 0.3,
        cl_weight: float = 0.5,
        mask_ratio: float = 0.5,
        text_fusion: bool = True,
        candidate_code_term: bool = True,
        warmup_steps: int = 500,
        fast_dropout: bool = True,
        mcm_chunk: int = 256,
        layer_norm_eps: float = 1e-12,
        initializer_range: float = 0.02,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        **kwargs,
    ):
        super().__init__(num_items=num_items, max_len=max_len, lr=lr, weight_decay=weight_decay, **kwargs)
        codes = torch.as_tensor(item_codes, dtype=torch.long)
        text = torch.as_tensor(text_vectors, dtype=torch.float32)
        if codes.shape[0] != num_items + 1 or text.shape[1] != num_items + 1:
            raise UserError(f"item codes {tuple(codes.shape)} / text vectors {tuple(text.shape)} do not cover "
                            f"items 0..{num_items}; rebuild the item features for this dataset")
        if text.shape[-1] != hidden_size:
            raise UserError(f"text vectors are {text.shape[-1]}-d but model.hidden_size={hidden_size}; "
                            f"set method.text_dim={hidden_size} (the authors' PCA size = the embedding size)")
        if int(codes.max()) >= code_vocab or int(codes[1:].min()) < 1:
            raise UserError(f"item code tokens must lie in 1..{code_vocab - 1} (0 is padding/[mask])")
        if neg_num < 0 or neg_num > num_items - 1:
            raise UserError(f"model.neg_num={neg_num} must be in 0..{num_items - 1} (0 = softmax over every item)")
        self.save_hyperparameters(ignore=["item_codes", "text_vectors"])
        # derived from the data at every build (rucai.cocorec.codes, cached): not stored in checkpoints
        self.register_buffer("item_codes", codes, persistent=False)  # [N+1, C]
        self.register_buffer("text_vectors", text.transpose(0, 1).contiguous(), persistent=False)  # [N+1, V, D]
        self.code_vocab = code_vocab
        self.tau, self.neg_num = tau, neg_num
        self.mlm_weight, self.cl_weight, self.mask_ratio = mlm_weight, cl_weight, mask_ratio
        self.candidate_code_term = candidate_code_term
        self.warmup_steps = warmup_steps
        self.mcm_chunk = mcm_chunk
        self.initializer_range = initializer_range

        self.code_emb = nn.Embedding(code_vocab, hidden_size, padding_idx=0)
        self.fusion = Fusion(fusion_layers, d=hidden_size, heads=num_heads, inner=inner_size,
                             dropout=fusion_dropout, attn_dropout=fusion_dropout, eps=layer_norm_eps,
                             text_fusion=text_fusion)
        self.pos_emb = nn.Embedding(max_len, hidden_size)
        self.emb_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.emb_dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(d_model=hidden_size, nhead=num_heads, dim_feedforward=inner_size,
                                           dropout=dropout, activation="gelu", batch_first=True, norm_first=False,
                                           layer_norm_eps=layer_norm_eps)
        layer.dropout = nn.Identity()  # RecBole-style FFN: no dropout between the activation and the 2nd linear
        self.encoder = nn.TransformerEncoder(layer, num_layers=num_layers, enable_nested_tensor=False)
        self.register_buffer("causal", torch.triu(torch.ones(max_len, max_len, dtype=torch.bool), 1), persistent=False)
        self.apply(self._init_weights)
        if fast_dropout:  # cheaper dropout masks on a CPU (rucai.models.layers); same semantics
            from rucai.models.layers import use_fast_dropout

            use_fast_dropout(self)
        self._eval_tables: tuple[torch.Tensor, torch.Tensor] | None = None

    def _init_weights(self, m: nn.Module) -> None:
        if isinstance(m, nn.Linear | nn.Embedding):
            m.weight.data.normal_(0.0, self.initializer_range)
            if isinstance(m, nn.Linear) and m.bias is not None:
                m.bias.data.zero_()
            if isinstance(m, nn.Embedding) and m.padding_idx is not None:
                m.weight.data[m.padding_idx].zero_()
        elif isinstance(m, nn.LayerNorm):
            m.weight.data.fill_(1.0)
            m.bias.data.zero_()
        elif isinstance(m, nn.MultiheadAttention):
            m.in_proj_weight.data.normal_(0.0, self.initializer_range)
            m.in_proj_bias.data.zero_()

    # -- items --------------------------------------------------------------------------------
    def fuse(self, codes: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Fused code states [n, C, D] of `items` [n] whose code tokens are `codes` [n, C]."""
        return self.fusion(self.code_emb(codes), self.text_vectors[items])

    def item_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(sequence-side [N+1, D], candidate-side [N+1, D]) representations of every item, one
        fusion pass; row 0 (padding) is zeros."""
        items = torch.arange(1, self.num_items + 1, device=self.item_codes.device)
        codes = self.item_codes[1:]
        seq_side = self.fuse(codes, items).mean(1)
        cand = seq_side + self.code_emb(codes).mean(1) if self.candidate_code_term else seq_side
        zero = seq_side.new_zeros(1, seq_side.shape[-1])
        return torch.cat([zero, seq_side]), torch.cat([zero, cand])

    # -- sequences ----------------------------------------------------------------------------
    def backbone(self, x: torch.Tensor, seq: torch.Tensor) -> torch.Tensor:
        """Item representations x [B, T, D] of `seq` [B, T] (right-padded) -> states [B, T, D]."""
        T = seq.size(1)
        x = x + self.pos_emb(torch.arange(T, device=seq.device))[None]
        x = self.emb_dropout(self.emb_norm(x))
        return self.encoder(x, mask=self.causal[:T, :T], src_key_padding_mask=seq == 0, is_causal=False)

    def _tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._eval_tables if self._eval_tables is not None else self.item_tables()

    def encode_all(self, seq: torch.Tensor) -> torch.Tensor:
        return self.backbone(self._tables()[0][seq], seq)

    def encode(self, seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h = self.encode_all(seq)
        return F.normalize(h[torch.arange(len(seq), device=seq.device), (lengths - 1).clamp(min=0)], dim=-1)

    def item_embeddings(self) -> torch.Tensor:
        return F.normalize(self._tables()[1], dim=-1)

    # evaluation: the item tables once per validation/test epoch
    def _cache_tables(self) -> None:
        with torch.no_grad():
            self._eval_tables = self.item_tables()

    def on_validation_epoch_start(self) -> None:
        self._cache_tables()

    def on_test_epoch_start(self) -> None:
        self._cache_tables()

    def on_validation_epoch_end(self) -> None:
        self._eval_tables = None

    def on_test_epoch_end(self) -> None:
        self._eval_tables = None

    # -- training -----------------------------------------------------------------------------
    def _negatives(self, positives: torch.Tensor) -> torch.Tensor:
        """`neg_num` items drawn uniformly without replacement from those not a target in the batch."""
        allowed = torch.ones(self.num_items + 1, dtype=torch.bool, device=positives.device)
        allowed[0] = False
        allowed[positives] = False
        pool = allowed.nonzero().squeeze(1)
        if len(pool) < self.neg_num:
            raise UserError(f"model.neg_num={self.neg_num} exceeds the {len(pool)} items left after the batch's "
                            f"targets; lower it or use neg_num=0 (every item)")
        return pool[torch.randperm(len(pool), device=pool.device)[: self.neg_num]]

    def rec_loss(self, user: torch.Tensor, target: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        u = F.normalize(user, dim=-1)
        if self.neg_num == 0:
            logits = (u / self.tau) @ F.normalize(cand, dim=-1).T
            logits[:, 0] = float("-inf")
            return F.cross_entropy(_fp32(logits), target)
        neg = F.normalize(cand[self._negatives(target)], dim=-1)
        pos = (u * F.normalize(cand[target], dim=-1)).sum(-1, keepdim=True)
        logits = torch.cat([pos, u @ neg.T], dim=1) / self.tau
        return F.cross_entropy(_fp32(logits), torch.zeros(len(u), dtype=torch.long, device=u.device))

    def mcm_loss(self, fused: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Masked code modelling: fused states [n, C, D] of corrupted items against every row of the
        code table (cosine / tau), cross-entropy at the chosen codes (labels != -100)."""
        chosen = labels >= 0  # only the chosen codes carry a label: score just those (half the rows)
        if not chosen.any():
            return fused.sum() * 0
        # 1/tau folded into the queries; the [n, vocab] logits are never held whole (~37k chosen codes
        # x 3,073 tokens per Office step: ~2 GB as one F.cross_entropy), `linear_cross_entropy`
        q = F.normalize(fused[chosen], dim=-1) / self.tau
        return linear_cross_entropy(q, F.normalize(self.code_emb.weight, dim=-1), labels[chosen], self.mcm_chunk)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        seq = batch["seq"]
        seq_table, cand_table = self.item_tables()
        h = self.backbone(seq_table[seq], seq)
        if "targets" in batch:  # all-positions windows: every position with a target is one sample
            keep = batch["targets"] > 0
            pick = lambda x: x[keep]  # noqa: E731
            target = batch["targets"][keep]
        else:
            rows = torch.arange(len(seq), device=seq.device)
            last = (batch["lengths"] - 1).clamp(min=0)
            pick = lambda x: x[rows, last]  # noqa: E731
            target = batch["target"]
        user = pick(h)
        rec = self.rec_loss(user, target, cand_table)
        mcm = msa = rec.new_zeros(())
        if self.mlm_weight or self.cl_weight:
            # the history with masked codes, fused item by item (every real position)
            real = seq > 0
            masked, labels = mask_codes(self.item_codes[seq], real, self.mask_ratio, self.code_vocab)
            fused_m = self.fuse(masked[real], seq[real])  # [n_real, C, D]
            xm = h.new_zeros(*seq.shape, h.shape[-1])
            xm[real] = fused_m.mean(1).to(xm.dtype)
            user_m = pick(self.backbone(xm, seq))
            mcm = self.mcm_loss(fused_m, labels[real])
            msa = (info_nce(user, user_m, self.tau) + info_nce(user_m, user, self.tau)) / 2
        loss = rec + self.mlm_weight * mcm + self.cl_weight * msa
        n = len(target)
        for name, v in (("loss", loss), ("rec_loss", rec), ("mcm_loss", mcm), ("msa_loss", msa)):
            self.log(f"train/{name}", v, on_step=True, on_epoch=True, prog_bar=name == "loss", batch_size=n)
        return loss

    def configure_optimizers(self):
        from rucai.runtime.hardware import adam

        opt = adam(self, self.parameters(), lr=self.lr, weight_decay=self.weight_decay, decoupled=True)
        warm = max(int(self.warmup_steps), 0)
        # the authors' `constant` schedule with warm-up: linear from 0 over `warmup_steps`, then flat
        # (transformers' get_constant_schedule_with_warmup: step / warmup_steps, then 1)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: step / warm if step < warm else 1.0)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
