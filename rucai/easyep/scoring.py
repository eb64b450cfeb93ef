"""EASY-EP expert scores from forward hooks (one prefill pass per batch, no generation).

For every MoE layer l, token t and routed expert i the token selected (slot j of its top-k):
  c(i,t) = g(i,t) * ||E_i(h_t)||_2       g: the gate weight exactly as the model routed,
                                         E_i(h_t): the raw expert output before gating
  s_t    = max(0, 1 - cos(x_t, x_t + y_t))   x_t: residual stream entering the MoE sub-layer,
                                         y_t: sum of the *routed* expert outputs (shared excluded)
  I(l,i) = sum over demos and tokens of c(i,t) * s_t
As in the authors' code (pruning/model_new.py, `Block.forward`): x is the residual stream before
the MoE sub-layer (not its RMS-normed input), and the norm is of the expert output before the
routing weight is applied. The baselines are collected in the same pass: selection frequency
(count of (t, i) selections) and summed gate weight (sum of g(i,t)).

Hooks: a forward pre-hook on `post_attention_layernorm` stores x; a forward hook on `mlp.experts`
sees (h, top_k_index, top_k_weights) and the routed output y, then re-runs the same experts module
on every (token, slot) pair with weight 1 to get ||E_i(h_t)|| -- so whatever experts implementation
is active (eager loop, grouped_mm, a quantised variant) is the one measured. Padding tokens
(attention_mask == 0) are excluded. Layers may live on different GPUs (accelerate device_map):
each layer's accumulators stay on its own device until `result()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from rucai.easyep.adapters import MoEAdapter, for_model

METRICS = ("easyep", "frequency", "gate", "tokens")


@dataclass
class Scores:
    """Per-layer score matrices, rows in `layers` order: [L, E] float64 tensors."""

    layers: list[int]
    easyep: torch.Tensor
    frequency: torch.Tensor
    gate: torch.Tensor
    num_tokens: int

    def by_name(self, name: str) -> torch.Tensor:
        if name not in ("easyep", "frequency", "gate"):
            raise KeyError(name)
        return getattr(self, name)

    def to_json(self) -> dict[str, Any]:
        return {"layers": self.layers, "num_tokens": self.num_tokens,
                "easyep": self.easyep.tolist(), "frequency": self.frequency.tolist(), "gate": self.gate.tolist()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Scores:
        t = lambda k: torch.tensor(d[k], dtype=torch.float64)  # noqa: E731
        return cls(list(d["layers"]), t("easyep"), t("frequency"), t("gate"), int(d["num_tokens"]))


class ExpertScorer:
    """Context manager: `with ExpertScorer(model) as sc: model(**batch)`; then `sc.result()`."""

    def __init__(self, model: Any, adapter: MoEAdapter | None = None, chunk_tokens: int = 4096):
        self.model = model
        self.adapter = adapter or for_model(model)
        self.blocks = self.adapter.moe_blocks(model)
        if not self.blocks:
            raise ValueError(f"{type(model).__name__} has no MoE layers the {type(self.adapter).__name__} recognises")
        self.num_experts = self.adapter.num_experts(model.config)
        self.chunk_tokens = chunk_tokens
        self._handles: list[Any] = []
        self._x: dict[int, torch.Tensor] = {}
        self._acc: dict[int, dict[str, torch.Tensor]] = {}
        self._valid: torch.Tensor | None = None  # [B*S] bool for the current batch
        self._inside = False
        self.num_tokens = 0
        self._first = min(self.blocks)

    # -- hooks ---------------------------------------------------------------------------------
    def __enter__(self) -> ExpertScorer:
        layers = self.adapter.layers(self.model)
        for li, block in self.blocks.items():
            pre = self.adapter.residual_input_module(layers[li])
            self._handles.append(pre.register_forward_pre_hook(self._make_pre(li)))
            self._handles.append(block.experts.register_forward_hook(self._make_post(li, block.experts),
                                                                     with_kwargs=True))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._x.clear()

    def set_attention_mask(self, attention_mask: torch.Tensor | None) -> None:
        """Call before each forward pass with the batch's attention mask ([B, S]) or None."""
        self._valid = None if attention_mask is None else attention_mask.reshape(-1).bool()

    def _make_pre(self, li: int):
        def hook(module, args):
            if not self._inside:
                self._x[li] = args[0].detach()
        return hook

    def _make_post(self, li: int, experts: Any):
        def hook(module, args, kwargs, output):
            if self._inside:
                return None
            names = ("hidden_states", "top_k_index", "top_k_weights")
            vals = list(args) + [kwargs[n] for n in names[len(args):]]
            h, idx, w = vals[:3]
            self._accumulate(li, experts, h.detach(), idx.detach(), w.detach(), output.detach())
            return None
        return hook

    @torch.no_grad()
    def _accumulate(self, li: int, experts: Any, h, idx, w, y) -> None:
        T, k = idx.shape
        dev = h.device
        x = self._x.pop(li).reshape(T, -1).to(dev)
        valid = torch.ones(T, dtype=torch.bool, device=dev) if self._valid is None else self._valid.to(dev)
        if li == self._first:
            self.num_tokens += int(valid.sum())
        # token contribution s_t (fp32)
        xf = x.float()
        s = (1.0 - torch.nn.functional.cosine_similarity(xf, xf + y.float(), dim=-1)).clamp_min(0.0)
        # raw expert outputs for every (token, slot): rerun the experts module with weight 1
        norms = torch.empty(T, k, dtype=torch.float32, device=dev)
        rows = torch.nonzero(valid).squeeze(-1)
        step = max(1, self.chunk_tokens // k)
        self._inside = True
        try:
            for start in range(0, rows.numel(), step):
                r = rows[start:start + step]
                hr = h[r].unsqueeze(1).expand(-1, k, -1).reshape(-1, h.shape[-1])
                ir = idx[r].reshape(-1, 1)
                ones = torch.ones_like(w[r].reshape(-1, 1))
                out = experts(hr, ir, ones)
                norms[r] = out.float().norm(dim=-1).view(-1, k)
        finally:
            self._inside = False
        acc = self._acc.get(li)
        if acc is None:
            acc = {m: torch.zeros(self.num_experts, dtype=torch.float64, device=dev) for m in ("easyep", "frequency", "gate")}
            self._acc[li] = acc
        wv, iv, nv = w[valid].float(), idx[valid], norms[valid]
        sv = s[valid].unsqueeze(-1)
        flat = iv.reshape(-1)
        acc["easyep"].index_add_(0, flat, (wv * nv * sv).reshape(-1).double())
        acc["frequency"].index_add_(0, flat, torch.ones_like(flat, dtype=torch.float64))
        acc["gate"].index_add_(0, flat, wv.reshape(-1).double())

    def result(self) -> Scores:
        layers = sorted(self.blocks)
        zero = torch.zeros(self.num_experts, dtype=torch.float64)

        def stack(m: str) -> torch.Tensor:
            return torch.stack([self._acc[li][m].cpu() if li in self._acc else zero for li in layers])

        return Scores(layers, stack("easyep"), stack("frequency"), stack("gate"), self.num_tokens)


def select_demos(texts: list[str], n: int | None = 25, rule: str = "longest", seed: int = 42,
                 length: Any = None) -> list[str]:
    """The authors' rule: shuffle with a seed, then the `n` longest (stable sort by length, descending).

    `rule`: "longest" | "random" (first n after the shuffle) | "first" (file order). `length`: the
    length function (default: characters). The authors sort lines of their per-token statistics
    file, whose length grows with the token count, so the scoring task passes the token count.
    """
    import random

    if rule not in ("longest", "random", "first"):
        raise ValueError(f"unknown demo rule {rule!r}; use longest, random or first")
    items = list(texts)
    if rule != "first":
        random.Random(seed).shuffle(items)
    if rule == "longest":
        items = sorted(items, key=length or len, reverse=True)
    return items if n is None else items[: int(n)]


@torch.no_grad()
def score_texts(model: Any, tokenizer: Any, texts: list[str], batch_size: int = 4, max_length: int = 4096,
                adapter: MoEAdapter | None = None, log_every: int = 0, chunk_tokens: int = 4096,
                add_special_tokens: bool | None = None) -> Scores:
    """Score the experts of `model` on `texts` (one prefill pass each, batched, right-padded).

    `tokenizer(texts)` must return `input_ids` and `attention_mask` tensors (a Hugging Face
    tokenizer with a pad token, or `rucai.easyep.toy.ByteTokenizer`). `add_special_tokens=False`
    for texts that already hold them (chat-formatted traces, `rucai.easyep.data.ChatTraces`);
    None: the tokenizer's default.
    """
    import logging

    log = logging.getLogger(__name__)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    # longest first keeps padding low within a batch
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    with ExpertScorer(model, adapter, chunk_tokens=chunk_tokens) as sc:
        for b, start in enumerate(range(0, len(order), batch_size)):
            batch = [texts[i] for i in order[start:start + batch_size]]
            kw = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
            enc = tokenizer(batch, return_tensors="pt", padding=True, truncation=True, max_length=max_length, **kw)
            ids = enc["input_ids"].to(device)
            mask = enc["attention_mask"].to(device)
            sc.set_attention_mask(mask)
            model(input_ids=ids, attention_mask=mask, use_cache=False)
            if log_every and (b + 1) % log_every == 0:
                log.info("scored %d/%d demos", min(start + batch_size, len(texts)), len(texts))
        out = sc.result()
    model.train(was_training)
    return out
