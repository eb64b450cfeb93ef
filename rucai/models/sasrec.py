"""SASRec (Kang & McAuley, 2018), trained with cross-entropy over all items as in RecBole.

Item + learned position embeddings -> LayerNorm -> dropout -> causal Transformer blocks
(post-LN, GELU feed-forward); the hidden state at the last real position is the user state,
scored against the shared item embedding table.

Parity with RecBole 1.2.1's SASRec (recbole/model/layers.py, sequential_recommender/sasrec.py):
- dropout: attention probabilities (attn_dropout), after the attention output projection and after
  the feed-forward's second linear (dropout), before each residual + LayerNorm. torch's
  `nn.TransformerEncoderLayer` also drops out inside the feed-forward, after the activation;
  RecBole's FeedForward has no such dropout, so it is replaced by the identity here.
- initialisation: every Linear/Embedding weight N(0, 0.02), biases 0, LayerNorm 1/0. The fused
  q/k/v projection of torch's attention is a Parameter (`in_proj_weight`), not an nn.Linear, so
  `apply` would leave it at torch's Xavier init: it is drawn N(0, 0.02) explicitly.
- training softmax over all rows of the item table including the padding row 0, as RecBole's CE
  loss (`softmax_over_padding=true`); false scores row 0 at -inf. Ranking always excludes it.
- exact (erf) GELU, LayerNorm eps 1e-12, learned positions counted from the oldest item, padding
  keys masked (RecBole adds -10000, here -inf; with right padding and the causal mask a real
  position never sees a padding key either way).
"""

from __future__ import annotations

import torch
from torch import nn

from rucai.models.seqrec import SeqRecModule


class SASRec(SeqRecModule):
    def __init__(
        self,
        num_items: int,
        max_len: int = 20,
        hidden_size: int = 64,
        num_layers: int = 2,
        num_heads: int = 2,
        inner_size: int | None = None,
        dropout: float = 0.5,
        attn_dropout: float = 0.5,
        layer_norm_eps: float = 1e-12,
        initializer_range: float = 0.02,
        softmax_over_padding: bool = True,
        **kwargs,
    ):
        super().__init__(num_items=num_items, max_len=max_len, **kwargs)
        self.save_hyperparameters()
        self.item_emb = nn.Embedding(num_items + 1, hidden_size, padding_idx=0)
        self.pos_emb = nn.Embedding(max_len, hidden_size)
        self.emb_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.emb_dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            d_model=hidden_size,
            nhead=num_heads,
            dim_feedforward=inner_size or 4 * hidden_size,
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=False,
            layer_norm_eps=layer_norm_eps,
        )
        # attention dropout differs from hidden dropout in RecBole's SASRec
        layer.self_attn.dropout = attn_dropout
        # no dropout between the feed-forward's activation and its second linear (RecBole's FeedForward)
        layer.dropout = nn.Identity()
        self.encoder = nn.TransformerEncoder(layer, num_layers=num_layers, enable_nested_tensor=False)
        self.register_buffer("causal", torch.triu(torch.ones(max_len, max_len, dtype=torch.bool), 1), persistent=False)
        self.softmax_includes_padding = softmax_over_padding
        self.initializer_range = initializer_range
        self.apply(self._init_weights)

    def _init_weights(self, m: nn.Module) -> None:
        if isinstance(m, nn.Linear | nn.Embedding):
            m.weight.data.normal_(0.0, self.initializer_range)
            if isinstance(m, nn.Linear) and m.bias is not None:
                m.bias.data.zero_()
        elif isinstance(m, nn.LayerNorm):
            m.weight.data.fill_(1.0)
            m.bias.data.zero_()
        elif isinstance(m, nn.MultiheadAttention):  # fused q/k/v: RecBole's three nn.Linear layers
            m.in_proj_weight.data.normal_(0.0, self.initializer_range)
            m.in_proj_bias.data.zero_()

    def encode_all(self, seq: torch.Tensor) -> torch.Tensor:
        L_ = seq.size(1)
        pos = torch.arange(L_, device=seq.device)
        x = self.item_emb(seq) + self.pos_emb(pos)[None]
        x = self.emb_dropout(self.emb_norm(x))
        return self.encoder(x, mask=self.causal[:L_, :L_], src_key_padding_mask=seq == 0, is_causal=False)

    def encode(self, seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h = self.encode_all(seq)
        return h[torch.arange(len(seq), device=seq.device), (lengths - 1).clamp(min=0)]

    def item_embeddings(self) -> torch.Tensor:
        return self.item_emb.weight
