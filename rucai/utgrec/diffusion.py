"""UTGRec's image reconstruction loss: a per-token diffusion loss on VAE latents (MAR's "DiffLoss").

The authors (`RUCAIBox/UTGRec` `diffloss.py`, `diffusion/`, taken from MAR, Li et al. 2024) decode
an item's image from its quantised codes by predicting, for every latent token, the noise added to
it, conditioned on the image decoder's state at that token:

- **Schedule**: 1,000 steps, cosine alpha-bar (Nichol & Dhariwal 2021), betas capped at 0.999.
- **Network** (`SimpleMLPAdaLN`): input projection, `depth` residual MLP blocks of width `width`
  modulated (adaLN: shift, scale, gate) by timestep embedding + projected condition, a modulated
  final layer; adaLN and output layers start at zero. Output: epsilon and the variance
  interpolation value v (learned range, out = 2 x channels).
- **Loss per token**: MSE(eps, eps_hat) + the variational bound term with the mean stopped
  (`learn_sigma=True`: KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) in bits, the discretised Gaussian
  NLL at t = 0), both averaged over channels; t uniform per token; each token repeated
  `batch_mul` times with its own t and noise; averaged over the tokens whose mask is 1.
- Sampling (image generation) is not needed to train a tokenizer and is not built here.

Ours departs in one place on purpose: a batch whose mask is all zero (no item has an image) gives
a zero loss, not the authors' 0/0 = NaN.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


def cosine_betas(steps: int = 1000, max_beta: float = 0.999) -> np.ndarray:
    """beta_t = 1 - abar(t+1)/abar(t), abar(s) = cos((s/T + 0.008)/1.008 * pi/2)^2, capped."""
    def abar(s: float) -> float:
        return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

    return np.array([min(1 - abar((i + 1) / steps) / abar(i / steps), max_beta) for i in range(steps)],
                    dtype=np.float64)


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _approx_std_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(x) of data in [-1, 1] quantised to 256 bins under N(mean, e^(2 log_scale)), elementwise
    (the edge bins take the tails)."""
    centred = x - mean
    inv = torch.exp(-log_scale)
    cdf_plus = _approx_std_normal_cdf(inv * (centred + 1.0 / 255.0))
    cdf_min = _approx_std_normal_cdf(inv * (centred - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


class GaussianDiffusion:
    """The training half of a DDPM with epsilon prediction and a learned-range variance."""

    def __init__(self, betas: np.ndarray) -> None:
        b = np.asarray(betas, dtype=np.float64)
        self.num_timesteps = len(b)
        a = 1.0 - b
        ac = np.cumprod(a)
        ac_prev = np.append(1.0, ac[:-1])
        post_var = b * (1.0 - ac_prev) / (1.0 - ac)
        self.tables = {
            "sqrt_ac": np.sqrt(ac), "sqrt_1m_ac": np.sqrt(1.0 - ac),
            "sqrt_recip_ac": np.sqrt(1.0 / ac), "sqrt_recipm1_ac": np.sqrt(1.0 / ac - 1.0),
            # the posterior variance is 0 at t = 0: its log is clipped to the t = 1 value
            "post_logvar": np.log(np.append(post_var[1], post_var[1:])),
            "post_c1": b * np.sqrt(ac_prev) / (1.0 - ac), "post_c2": (1.0 - ac_prev) * np.sqrt(a) / (1.0 - ac),
            "log_beta": np.log(b),
        }

    def _at(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        v = torch.as_tensor(self.tables[name], device=t.device)[t].to(torch.float32)
        return v.view(-1, *([1] * (like.dim() - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self._at("sqrt_ac", t, x0) * x0 + self._at("sqrt_1m_ac", t, x0) * noise

    def q_posterior(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, clipped log-variance) of q(x_{t-1} | x_t, x_0)."""
        mean = self._at("post_c1", t, xt) * x0 + self._at("post_c2", t, xt) * xt
        return mean, self._at("post_logvar", t, xt).expand_as(xt)

    def p_mean_logvar(self, eps: torch.Tensor, v: torch.Tensor, xt: torch.Tensor,
                      t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's p(x_{t-1} | x_t): log-variance interpolated between the posterior's and
        log beta_t by (v + 1)/2; mean = the posterior mean at the x_0 implied by eps."""
        frac = (v + 1.0) / 2.0
        logvar = frac * self._at("log_beta", t, xt) + (1.0 - frac) * self._at("post_logvar", t, xt)
        x0_hat = self._at("sqrt_recip_ac", t, xt) * xt - self._at("sqrt_recipm1_ac", t, xt) * eps
        mean, _ = self.q_posterior(x0_hat, xt, t)
        return mean, logvar

    def training_losses(self, net: nn.Module, x0: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                        noise: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per-row losses of x0 [N, C]: {"mse", "vb", "loss" = mse + vb}."""
        noise = torch.randn_like(x0) if noise is None else noise
        xt = self.q_sample(x0, t, noise)
        out = net(xt, t, cond)
        c = x0.shape[1]
        eps, v = out[:, :c].float(), out[:, c:].float()
        mse = ((noise.float() - eps) ** 2).mean(dim=1)
        # the bound trains the variance only: the mean comes from eps with its gradient stopped
        mean, logvar = self.p_mean_logvar(eps.detach(), v, xt.float(), t)
        true_mean, true_logvar = self.q_posterior(x0.float(), xt.float(), t)
        kl = normal_kl(true_mean, true_logvar, mean, logvar).mean(dim=1) / math.log(2.0)
        nll = -discretized_gaussian_log_likelihood(x0.float(), mean, 0.5 * logvar).mean(dim=1) / math.log(2.0)
        vb = torch.where(t == 0, nll, kl)
        return {"mse": mse, "vb": vb, "loss": mse + vb}


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class TimestepEmbedder(nn.Module):
    """Sinusoidal features of t (256: cos half then sin half, max period 10,000) -> MLP."""

    def __init__(self, hidden: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    @staticmethod
    def features(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t[:, None].float() * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        return torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1) if dim % 2 else emb

    def forward(self, t: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return self.mlp(self.features(t, self.freq_dim).to(dtype))


class AdaLNBlock(nn.Module):
    """x + gate * MLP(modulate(LN(x), shift, scale)), (shift, scale, gate) from the condition."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.ada(y).chunk(3, dim=-1)
        return x + gate * self.mlp(_modulate(self.norm(x), shift, scale))


class SimpleMLPAdaLN(nn.Module):
    def __init__(self, in_channels: int, width: int, out_channels: int, cond_channels: int, depth: int) -> None:
        super().__init__()
        self.time = TimestepEmbedder(width)
        self.cond = nn.Linear(cond_channels, width)
        self.inp = nn.Linear(in_channels, width)
        self.blocks = nn.ModuleList(AdaLNBlock(width) for _ in range(int(depth)))
        self.final_norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.out = nn.Linear(width, out_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.time.mlp[0].weight, std=0.02)
        nn.init.normal_(self.time.mlp[2].weight, std=0.02)
        for lin in [b.ada[-1] for b in self.blocks] + [self.final_ada[-1], self.out]:
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        y = self.time(t, dtype=h.dtype) + self.cond(c).to(h.dtype)
        for block in self.blocks:
            h = block(h, y)
        shift, scale = self.final_ada(y).chunk(2, dim=-1)
        return self.out(_modulate(self.final_norm(h), shift, scale))


class DiffLoss(nn.Module):
    """Diffusion loss of target tokens [N, C] conditioned on states z [N, D], averaged over mask == 1."""

    def __init__(self, target_channels: int, cond_channels: int, width: int = 1024, depth: int = 3,
                 steps: int = 1000, batch_mul: int = 4) -> None:
        super().__init__()
        self.channels, self.batch_mul = int(target_channels), int(batch_mul)
        self.net = SimpleMLPAdaLN(target_channels, width, 2 * target_channels, cond_channels, depth)
        self.diffusion = GaussianDiffusion(cosine_betas(steps))

    def forward(self, target: torch.Tensor, z: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        target = target.reshape(-1, target.shape[-1]).repeat(self.batch_mul, 1)
        z = z.reshape(-1, z.shape[-1]).repeat(self.batch_mul, 1)
        t = torch.randint(0, self.diffusion.num_timesteps, (target.shape[0],), device=target.device)
        loss = self.diffusion.training_losses(self.net, target, t, z)["loss"]
        if mask is None:
            return loss.mean()
        m = mask.reshape(-1).repeat(self.batch_mul).to(loss.dtype)
        if not bool(m.sum() > 0):  # no image in the batch: zero, kept on the graph (the authors: NaN)
            return (loss * m).sum()
        return (loss * m).sum() / m.sum()


__all__ = ["DiffLoss", "GaussianDiffusion", "SimpleMLPAdaLN", "cosine_betas", "normal_kl",
           "discretized_gaussian_log_likelihood"]
