"""UTGRec's tree codebooks: SimVQ codebooks quantising the differences of three code states.

Follows the authors' `layers.py` (`TreeVQLayer`, `SimVQLayer`, `VQLayer`) and the quantisation
part of `model.py` (`MMTokenizerModel.forward`, `shift_and_sub`, `reverse_shift_and_sub`):

- SimVQ: the codebook is `W(E)` = `E @ W^T` with `E` [K, d] drawn once from N(0, d^-1/2 std) and
  `W` a bias-free `Linear(d, d)` (PyTorch's default init). In the authors' pre-training `E` is a
  trainable `nn.Embedding` (`sim_vq_fix_code_embs` defaults to False); adaptation
  (`--fix_codebook True`) freezes `E` and keeps `W` trainable. `E` is therefore a parameter here
  whose `requires_grad` `freeze_code_embs()` switches off.
- Level 1 uses the root codebook; levels 2 and 3 share one leaf codebook. The quantiser's input is
  `d = (h1, h2 - h1, h3 - h2)`; the reconstruction is the cumulative sum of the quantised `d`.
- Per codebook: `mse(q, d.detach()) + beta * mse(d, q.detach())`, straight-through estimator;
  the VQ loss is the mean over the two codebooks (root over level 1, leaf over levels 2-3
  jointly).
- Warm-up: while `step <= warmup_steps` quantisation is bypassed: the output is `h` itself (not
  differences, no cumulative sum), the VQ loss is 0, and the quantiser still runs with a zero-
  weighted output (`h + 0 * q`) so every parameter is in the graph. The authors keep `step` in a
  plain attribute (lost on resume) and advance it on every forward call; here it is a persistent
  buffer that advances only in training mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SimVQCodebook(nn.Module):
    """A SimVQ codebook: entries `W(E)`, `E` fixed-random at init, `W` a trainable linear map."""

    def __init__(self, num_codes: int, dim: int) -> None:
        super().__init__()
        self.num_codes = int(num_codes)
        self.dim = int(dim)
        self.code_embs = nn.Parameter(torch.randn(self.num_codes, self.dim) * self.dim**-0.5)
        self.proj = nn.Linear(self.dim, self.dim, bias=False)

    def weight(self) -> torch.Tensor:
        """The codebook [K, d] = E W^T."""
        return self.proj(self.code_embs)

    def distances(self, x: torch.Tensor) -> torch.Tensor:
        """Squared Euclidean distances [N, K] between rows of x [N, d] and the entries."""
        w = self.weight()
        return x.pow(2).sum(-1, keepdim=True) - 2 * x @ w.t() + w.pow(2).sum(-1)[None, :]

    def forward(self, x: torch.Tensor, beta: float):
        """Quantise x [..., d]: (straight-through q, loss, indices [...])."""
        flat = x.reshape(-1, self.dim)
        idx = self.distances(flat).argmin(-1)
        q = F.embedding(idx, self.weight()).view_as(x)
        loss = F.mse_loss(q, x.detach()) + beta * F.mse_loss(x, q.detach())
        q_st = x + (q - x).detach()
        return q_st, loss, idx.view(x.shape[:-1])


def differences(h: torch.Tensor) -> torch.Tensor:
    """(h1, h2 - h1, h3 - h2, ...) along dim 1 of h [B, L, d]."""
    return torch.cat([h[:, :1], h[:, 1:] - h[:, :-1]], dim=1)


def cumulative(d: torch.Tensor) -> torch.Tensor:
    """Inverse of `differences`: the cumulative sum along dim 1."""
    return torch.cumsum(d, dim=1)


class TreeQuantizer(nn.Module):
    """Root codebook for level 1, one shared leaf codebook for levels 2..L, on differences."""

    def __init__(self, root_codes: int = 256, leaf_codes: int = 512, dim: int = 128,
                 beta: float = 0.25, warmup_steps: int = 300, levels: int = 3) -> None:
        super().__init__()
        if levels < 2:
            raise ValueError("TreeQuantizer needs at least 2 levels (root + leaf)")
        self.levels = int(levels)
        self.beta = float(beta)
        self.warmup_steps = int(warmup_steps)
        self.root = SimVQCodebook(root_codes, dim)
        self.leaf = SimVQCodebook(leaf_codes, dim)
        self.register_buffer("step", torch.zeros((), dtype=torch.long), persistent=True)

    # -- switches --------------------------------------------------------------------------
    def freeze_code_embs(self) -> None:
        """Freeze E of both codebooks (W stays trainable): the authors' `fix_codebook`."""
        for book in (self.root, self.leaf):
            book.code_embs.requires_grad_(False)
            book.proj.weight.requires_grad_(True)

    def in_warmup(self) -> bool:
        """The authors' test `step <= vq_warmup_steps` (so warm-up lasts warmup_steps + 1 steps)."""
        return int(self.step.item()) <= self.warmup_steps

    # -- quantisation ----------------------------------------------------------------------
    def quantize(self, h: torch.Tensor):
        """Quantise the differences of h [B, L, d]: (reconstruction, vq loss, codes [B, L])."""
        if h.dim() != 3 or h.shape[1] != self.levels:
            raise ValueError(f"expected h [B, {self.levels}, d], got {tuple(h.shape)}")
        d = differences(h)
        q1, loss1, c1 = self.root(d[:, 0], self.beta)
        qr, loss2, cr = self.leaf(d[:, 1:].contiguous(), self.beta)
        q = torch.cat([q1[:, None], qr], dim=1)
        codes = torch.cat([c1[:, None], cr], dim=1)
        return cumulative(q), (loss1 + loss2) / 2, codes

    def forward(self, h: torch.Tensor, bypass: bool | None = None):
        """(q [B, L, d], vq loss, codes [B, L] level-local). Advances `step` in training only.

        `bypass=None` takes the warm-up decision from the step counter; eval-time code
        generation passes `bypass=False`.
        """
        if bypass is None:
            bypass = self.in_warmup()
        recon, loss, codes = self.quantize(h)
        if self.training:
            self.step += 1
        if bypass:
            return h + 0 * recon, h.new_zeros(()), codes
        return recon, loss, codes

    @torch.no_grad()
    def leaf_distances(self, h: torch.Tensor) -> torch.Tensor:
        """Distances [B, leaf_codes] of the last difference h_L - h_{L-1} to the leaf entries
        (what the authors' `get_topk_tail_token` ranks when resolving collisions)."""
        return self.leaf.distances(differences(h)[:, -1])
