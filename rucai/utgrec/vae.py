"""The frozen image encoder of UTGRec's image branch: the encoder half of MAR's KL-16 VAE.

The authors (`RUCAIBox/UTGRec` `vae.py`, from MAR / LDM's KL autoencoder) encode a 256x256 centre
crop (pixels in [-1, 1]) to a 16x16x16 latent, sample the diagonal Gaussian posterior and scale
it by 0.2325; the image decoder then reconstructs those 256 latent tokens (16 channels each) with
the diffusion loss (`rucai.utgrec.diffusion`). Only the encoder is needed to train the tokenizer.

The module names follow the LDM layout (`encoder.conv_in`, `encoder.down.{i}.block.{j}`,
`encoder.down.{i}.attn.{j}`, `encoder.down.{i}.downsample`, `encoder.mid.{block_1,attn_1,block_2}`,
`encoder.norm_out`, `encoder.conv_out`, `quant_conv`), so MAR's `kl16.ckpt` (`{"model": state_dict}`)
loads by path; its decoder weights are not used. The weights are not on PyPI: `vae_path` must name
the downloaded file (MAR's release), and a missing file is one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rucai.errors import UserError

LATENT_SCALE = 0.2325  # MAR's scaling of KL-16 latents
IMAGE_SIZE = 256


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, ch, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the spatial positions, 1x1 convolutions for q, k, v, out."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.norm = _norm(ch)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(ch, ch, 1) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        b, c, hh, ww = h.shape
        q, k, v = (m(h).reshape(b, c, hh * ww).transpose(1, 2) for m in (self.q, self.k, self.v))
        a = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]  # [b, hw, c]
        return x + self.proj_out(a.transpose(1, 2).reshape(b, c, hh, ww))


class Downsample(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # the asymmetric padding of LDM


class _Level(nn.Module):
    def __init__(self, blocks: list[nn.Module], attns: list[nn.Module], down: nn.Module | None) -> None:
        super().__init__()
        self.block, self.attn = nn.ModuleList(blocks), nn.ModuleList(attns)
        if down is not None:
            self.downsample = down


class _Mid(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.block_1, self.attn_1, self.block_2 = ResnetBlock(ch, ch), AttnBlock(ch), ResnetBlock(ch, ch)


class Encoder(nn.Module):
    def __init__(self, ch: int = 128, ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4), num_res_blocks: int = 2,
                 attn_resolutions: tuple[int, ...] = (16,), resolution: int = IMAGE_SIZE, z_channels: int = 16) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(3, ch, 3, padding=1)
        levels, res, cin = [], resolution, ch
        for i, mult in enumerate(ch_mult):
            cout = ch * mult
            blocks, attns = [], []
            for _ in range(num_res_blocks):
                blocks.append(ResnetBlock(cin, cout))
                cin = cout
                if res in attn_resolutions:
                    attns.append(AttnBlock(cout))
            last = i == len(ch_mult) - 1
            levels.append(_Level(blocks, attns, None if last else Downsample(cout)))
            res = res if last else res // 2
        self.down = nn.ModuleList(levels)
        self.mid = _Mid(cin)
        self.norm_out = _norm(cin)
        self.conv_out = nn.Conv2d(cin, 2 * z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            for j, block in enumerate(level.block):
                h = block(h)
                if len(level.attn):
                    h = level.attn[j](h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))


class KLImageEncoder(nn.Module):
    """Image [B, 3, H, W] in [-1, 1] -> scaled posterior sample [B, embed_dim, H/16, W/16] (frozen)."""

    def __init__(self, embed_dim: int = 16, ch: int = 128, ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4),
                 scale: float = LATENT_SCALE) -> None:
        super().__init__()
        self.encoder = Encoder(ch=ch, ch_mult=tuple(ch_mult), z_channels=embed_dim)
        self.quant_conv = nn.Conv2d(2 * embed_dim, 2 * embed_dim, 1)
        self.embed_dim, self.scale = int(embed_dim), float(scale)
        self.stride = 2 ** (len(ch_mult) - 1)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> KLImageEncoder:
        return super().train(False)  # always frozen, in eval mode

    @torch.no_grad()
    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        w = self.quant_conv.weight
        moments = self.quant_conv(self.encoder(images.to(device=w.device, dtype=w.dtype)))
        mean, logvar = moments.chunk(2, dim=1)
        std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return (mean + std * noise) * self.scale


def load_image_encoder(path: str | Path | None, embed_dim: int = 16, **kwargs: Any) -> KLImageEncoder:
    """MAR's KL-16 encoder from `path` (its `kl16.ckpt`: {"model": state_dict}); `path=None` keeps the
    random initialisation (tests and shape checks only)."""
    enc = KLImageEncoder(embed_dim=embed_dim, **kwargs)
    if path is None:
        return enc
    p = Path(path)
    if not p.is_file():
        raise UserError(f"VAE checkpoint not found at {p}: download MAR's KL-16 VAE (kl16.ckpt, "
                        "github.com/LTH14/mar) and set method.tokenizer.vae_path")
    sd = torch.load(p, map_location="cpu", weights_only=True)
    sd = sd.get("model", sd) if isinstance(sd, dict) else sd
    mine = enc.state_dict()
    missing = sorted(k for k in mine if k not in sd)
    if missing:
        raise UserError(f"{p} is not a KL-16 VAE checkpoint: {len(missing)} encoder weights missing "
                        f"(first: {missing[0]}); expected MAR's kl16.ckpt")
    enc.load_state_dict({k: sd[k] for k in mine})
    return enc


def center_crop_arr(image: Any, size: int = IMAGE_SIZE) -> Any:
    """ADM's centre crop (the authors' `center_crop_arr`): halve with a box filter while the short
    side is at least 2x `size`, resize the short side to `size` (bicubic), crop the centre."""
    from PIL import Image

    while min(*image.size) >= 2 * size:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
    s = size / min(*image.size)
    image = image.resize(tuple(round(x * s) for x in image.size), resample=Image.BICUBIC)
    arr = np.array(image)
    y, x = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return Image.fromarray(arr[y: y + size, x: x + size])


def image_tensor(image: Any, size: int = IMAGE_SIZE, flip: bool = False) -> torch.Tensor:
    """The authors' VAE transform: centre crop, (train: random horizontal flip, drawn by the caller),
    to [3, size, size] in [-1, 1]."""
    arr = np.asarray(center_crop_arr(image.convert("RGB"), size), dtype=np.float32) / 255.0
    t = torch.from_numpy(arr).permute(2, 0, 1)
    if flip:
        t = t.flip(-1)
    return t * 2.0 - 1.0


def patchify(latents: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] -> [B, h*w, C] (patch size 1, row-major), as the authors' `patchify`."""
    b, c, h, w = latents.shape
    return latents.permute(0, 2, 3, 1).reshape(b, h * w, c)


__all__ = ["KLImageEncoder", "load_image_encoder", "center_crop_arr", "image_tensor", "patchify", "LATENT_SCALE"]
