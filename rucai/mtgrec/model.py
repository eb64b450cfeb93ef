"""TIGER over K tokenizers sharing one vocabulary (MTGRec's pre-training model).

Every tokenizer maps level-l code c to the same token `offset + l * codebook_size + c` (the
authors' `Tokenizer._sem_ids_to_tokens`: per-level offsets, shared by all tokenizers), so one T5
reads and writes any tokenizer's IDs. Training: each example is written with a tokenizer drawn
from `select_prob` (the authors' `Collator`: `np.random.choice(tokenizers, p=select_prob)` per
example). Evaluation uses tokenizer `eval_tokenizer` (its item table and trie). With
`user_token` on, the user token (the same for every tokenizer) comes first in the encoder input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from rucai.models.tiger import TIGER, load_item_codes
from rucai.models.trie import EOS, PAD, SemanticIDTrie


class MultiTokenizerTIGER(TIGER):
    def __init__(
        self,
        num_items: int,
        tokenizers: Sequence[Mapping[int, Sequence[int]]],
        codebook_size: int = 256,
        warmup_steps: int = 0,
        select_prob: Sequence[float] | None = None,
        **kwargs,
    ):
        if not tokenizers:
            raise ValueError("need at least one tokenizer")
        codes = [load_item_codes(t) for t in tokenizers]
        super().__init__(num_items=num_items, item_codes=codes[-1], codebook_size=codebook_size, **kwargs)
        self.warmup_steps = warmup_steps
        self.num_tokenizers = K = len(codes)
        self.tries = [SemanticIDTrie({i: c[i] for i in range(1, num_items + 1)}, codebook_size=codebook_size)
                      for c in codes]
        if any(t.vocab_size != self.trie.vocab_size or t.num_levels != self.num_levels for t in self.tries):
            raise ValueError("tokenizers must share levels and codebook size (one vocabulary)")
        tables = torch.full((K, num_items + 1, self.num_levels), PAD, dtype=torch.long)
        lv = torch.arange(self.num_levels)
        for k, t in enumerate(self.tries):
            tables[k, 1:] = t.token(lv, t.codes)
        self.register_buffer("item2tok_all", tables)
        p = torch.full((K,), 1.0 / K) if select_prob is None else torch.as_tensor(select_prob, dtype=torch.float)
        self.register_buffer("select_prob", p / p.sum())
        self.eval_tokenizer = K - 1

    # -- tokens --------------------------------------------------------------------------------
    def _tok(self, n: int, tok: torch.Tensor | int | None) -> torch.Tensor:
        if tok is None:
            tok = self.eval_tokenizer
        if isinstance(tok, int):
            return torch.full((n,), tok, dtype=torch.long, device=self.item2tok_all.device)
        return tok

    def encode_inputs(self, seq: torch.Tensor, lengths: torch.Tensor, tok: torch.Tensor | int | None = None):
        B = seq.size(0)
        tok = self._tok(B, tok)
        n_tok = lengths * self.num_levels
        width = int(n_tok.max()) + 1
        flat = self.item2tok_all[tok.unsqueeze(1), seq].view(B, -1)
        ids = torch.cat([flat, flat.new_zeros(B, 1)], 1)[:, :width].clone()
        ids.scatter_(1, n_tok.view(-1, 1), EOS)
        mask = (torch.arange(width, device=seq.device).unsqueeze(0) <= n_tok.unsqueeze(1)).long()
        return ids, mask

    def target_tokens(self, target: torch.Tensor, tok: torch.Tensor | int | None = None) -> torch.Tensor:
        tok = self._tok(len(target), tok)
        return torch.cat([self.item2tok_all[tok, target], target.new_full((len(target), 1), EOS)], 1)

    def _trie(self) -> SemanticIDTrie:
        t = self.tries[self.eval_tokenizer]
        if t.device != self.device:
            t.to(self.device)
        return t

    # -- losses --------------------------------------------------------------------------------
    def example_losses(self, batch: dict[str, torch.Tensor], tok: torch.Tensor | int | None) -> torch.Tensor:
        """Per-example mean token cross-entropy [B] (T5's loss, averaged per example)."""
        ids, mask = self.model_inputs(batch, tok=tok)
        labels = self.target_tokens(batch["target"], tok)
        logits = self.t5(input_ids=ids, attention_mask=mask, labels=labels).logits
        ce = F.cross_entropy(logits.float().transpose(1, 2), labels, reduction="none")
        return ce.mean(1)

    def loss_sum(self, batch: dict[str, torch.Tensor], tok: int) -> tuple[torch.Tensor, int]:
        """(sum of per-example losses with every example under tokenizer `tok`, #examples)."""
        return self.example_losses(batch, tok).sum(), len(batch["target"])

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        B = len(batch["target"])
        if self.num_tokenizers == 1:
            tok = self._tok(B, 0)
        else:
            tok = torch.multinomial(self.select_prob, B, replacement=True)
        loss = self.example_losses(batch, tok).mean()
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=B)
        return loss

    # -- optimisation (authors: AdamW + cosine schedule with linear warm-up, per step) -----------
    # `warmup_steps` and the schedule's length count optimizer steps (Lightning's interval "step"
    # steps once per optimizer step, after gradient accumulation). The authors' accelerate
    # scheduler steps num_processes times per optimizer step, so their warmup_steps 10,000 on 4
    # GPUs is 2,500 optimizer steps: the configs say 2,500 (rucai/mtgrec/config.py).
    def configure_optimizers(self):
        from transformers import get_cosine_schedule_with_warmup

        opt = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        total = int(self.trainer.estimated_stepping_batches)
        sched = get_cosine_schedule_with_warmup(opt, min(self.warmup_steps, max(total - 1, 0)), max(total, 1))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def t5_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.t5.state_dict().items()}
