"""Small building blocks shared by the models.

`FastDropout`: inverted dropout whose mask comes from 16-bit slices of 64-bit random integers, ~5x
cheaper to draw on a CPU than `torch.bernoulli_` per element (which was a quarter of a TIGER
training step in bf16, `experiments/tiger/README.md`). Same semantics as `nn.Dropout` (zero with
probability p, scale the rest by 1/(1-p)); p is quantised to a multiple of 1/65,536 (0.1 -> 0.100006).
Only the random stream differs, so results match `nn.Dropout` in distribution, not bit for bit.
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
