"""SASRec (Kang & McAuley, 2018), trained with cross-entropy over all items as in RecBole.

Item + learned position embeddings -> LayerNorm -> dropout -> causal Transformer blocks
(post-LN, GELU feed-forward); the hidden state at the last real position is the user state,
scored against the shared item embedding table.
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
        self.encoder = nn.TransformerEncoder(layer, num_layers=num_layers, enable_nested_tensor=False)
        self.register_buffer("causal", torch.triu(torch.ones(max_len, max_len, dtype=torch.bool), 1), persistent=False)
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
