"""Small building blocks shared by the models.

`FastDropout`: inverted dropout whose mask comes from 16-bit slices of 64-bit random integers, ~5x
cheaper to draw on a CPU than `torch.bernoulli_` per element (which was a quarter of a TIGER
training step in bf16, `experiments/tiger/README.md`). Same semantics as `nn.Dropout` (zero with
probability p, scale the rest by 1/(1-p)); p is quantised to a multiple of 1/65,536 (0.1 -> 0.100006).
Only the random stream differs, so results match `nn.Dropout` in distribution, not bit for bit.

`linear_cross_entropy`: mean cross-entropy of `q @ w.T` against labels, computed in row chunks and
recomputed in the backward pass, so the [n, vocab] logits (and their softmax and gradient) are never
held whole: CoCoRec's masked code modelling scores ~37k masked codes against a 3,073-row code table
per step, 430 MB per fp32 copy of the logits and ~2 GB per step as plain `F.cross_entropy`.
"""

from __future__ import annotations

import torch
from torch import nn


def keep_mask(shape: torch.Size, p: float, device: torch.device) -> torch.Tensor:
    """Bool mask, True with probability 1 - p (p quantised to 1/65,536): four 16-bit draws per
    64-bit random integer, compared in int16 (no widening pass)."""
    n = 1
    for d in shape:
        n *= d
    words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=device)
    return (words.view(torch.int16)[:n] >= round(p * 65536) - 32768).view(shape)


class _MaskedScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return torch.ops.aten.native_dropout_backward(x, keep, scale)  # x * keep * scale, one fused pass

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return torch.ops.aten.native_dropout_backward(grad, keep, ctx.scale), None, None


class FastDropout(nn.Module):
    def __init__(self, p: float = 0.1):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.q = round(p * 65536) / 65536  # the probability actually used

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.q == 0:
            return x
        return _MaskedScale.apply(x, keep_mask(x.shape, self.q, x.device), 1.0 / (1.0 - self.q))

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_fast_dropout(module: nn.Module) -> int:
    """Replace every `nn.Dropout` inside `module` by a `FastDropout` of the same p; returns how many."""
    n = 0
    for name, child in list(module.named_children()):
        if type(child) is nn.Dropout:
            setattr(module, name, FastDropout(child.p))
            n += 1
        else:
            n += use_fast_dropout(child)
    return n


class _LinearCrossEntropy(torch.autograd.Function):
    """Exact mean CE of logits = q @ w.T (softmax over w's rows), in fp32, in chunks of `chunk`
    rows; each chunk's logits are recomputed in the backward pass and updated in place."""

    @staticmethod
    def forward(ctx, q: torch.Tensor, w: torch.Tensor, labels: torch.Tensor, chunk: int) -> torch.Tensor:
        qf, wf = q.float(), w.float()
        n = qf.shape[0]
        lse = torch.empty(n, dtype=torch.float32, device=q.device)
        with torch.autocast(q.device.type, enabled=False):  # fp32 matmuls under bf16 autocast too
            picked = (qf * wf[labels]).sum(-1)  # the label logits, without the [n, V] block
            for a in range(0, n, chunk):
                lse[a : a + chunk] = torch.logsumexp(qf[a : a + chunk] @ wf.T, dim=-1)
        ctx.save_for_backward(q, w, labels, lse)
        ctx.chunk = chunk
        return (lse - picked).sum() / max(n, 1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        q, w, labels, lse = ctx.saved_tensors
        qf, wf = q.float(), w.float()
        n = qf.shape[0]
        scale = grad.float() / max(n, 1)
        dq = torch.empty_like(qf)
        dw = torch.zeros_like(wf)
        for a in range(0, n, ctx.chunk):
            qc = qf[a : a + ctx.chunk]
            g = (qc @ wf.T).sub_(lse[a : a + ctx.chunk, None]).exp_()  # the softmax
            g.scatter_add_(1, labels[a : a + ctx.chunk, None], g.new_full((len(qc), 1), -1.0)).mul_(scale)
            torch.mm(g, wf, out=dq[a : a + ctx.chunk])
            dw.addmm_(g.T, qc)
        return (dq.to(q.dtype) if ctx.needs_input_grad[0] else None,
                dw.to(w.dtype) if ctx.needs_input_grad[1] else None, None, None)


def linear_cross_entropy(q: torch.Tensor, w: torch.Tensor, labels: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Mean cross-entropy of the logits q [n, D] @ w [V, D].T against labels [n] (all valid), in fp32
    (also under autocast), without materialising the [n, V] logits: peak extra memory is one
    [chunk, V] fp32 block, small enough to stay in cache."""
    if q.shape[0] == 0:
        return (q.sum() + w.sum()) * 0
    return _LinearCrossEntropy.apply(q, w, labels, int(chunk))
