"""RQ-VAE semantic item IDs (TIGER, LC-Rec, MTGRec), trainable on CPU.

An MLP encoder maps an item's text embedding to a latent z (e_dim); L residual codebooks of K
codes quantize z coarse-to-fine (level l quantizes the residual left by levels < l); an MLP decoder
reconstructs the embedding from the summed codewords. Loss = recon MSE + quant_loss_weight *
mean_l(codebook_loss + beta * commitment_loss), with the straight-through estimator; with
`ema=True` the codebooks are instead EMA cluster means (decay 0.99) and only the commitment term is
a loss. Codebooks are k-means initialised from the first training batch's residuals
(`kmeans_init_on="all"`: from every fitted row's, before the first step).

Defaults follow LC-Rec `index/main.py` / `index/run.sh` (zhengbw0324/LC-Rec, which MTGRec's
tokenizer reuses): e_dim 32, 3 x 256 codes, beta 0.25, kmeans_init, lr 1e-3, AdamW, weight
decay 1e-4, dropout 0, batch 1024. CPU departures (both parameters): the papers' MLP is
PAPER_LAYERS [2048,1024,512,256,128,64] trained 5,000-10,000 epochs on a GPU; the defaults here
are CPU_LAYERS [512,256,128,64] and 100 epochs (`--layers 2048 1024 512 256 128 64 --epochs 5000`
restores the paper's setting).

The MTGRec authors' recipe (zhengbw0324/MTGRec `tokenizer/config.yaml`, `layers.py`, `trainer.py`,
`main.py`) differs from LC-Rec's in ways that matter for the stability of the codes across epochs:
`optimizer="adagrad"` (lr 1e-3, weight decay 0, constant lr), `layers=[2048,1024,512,256,128]` with
`e_dim=None` (the last entry IS the latent; no layer appended), `ema=True`, `init="torch_default"`
(their MLP keeps nn.Linear's default init; LC-Rec uses xavier-normal), `kmeans_init_on="all"` (their
`generate_codebook` runs k-means level by level on the latents of every training item before the
first step; sklearn `KMeans(n_init="auto")`, ours is a torch k-means++ + Lloyd, same in substance),
and the RQ-VAE is fit on the training items only (`fit_rows`: items in some user's sequence minus
its last two, `main.py`) while codes are assigned to all items (`generate_tokens.py`).
`device="cuda"|"auto"` trains on a GPU (batches and model move there; k-means stays on the CPU).

Items whose L codes collide get an extra code 0,1,2,... (TIGER); items with unique codes get 0.

    python -m rucai.rec.rqvae --items ../shared/data/amazon18_office --name Office_Products \
        --out outputs/rqvae_office --epochs 100
    python -m rucai.rec.rqvae ... --authors --epochs 300     (MTGRec's recipe: the flags below)
    python -m rucai.rec.rqvae ... --optimizer adagrad --weight-decay 0 --layers 2048 1024 512 256 128 \
        --e-dim null --ema --kmeans-init-on all --init torch_default --batch-size 2048 --pca-dim 128 \
        --fit-on train [--device auto]
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rucai.errors import UserError
from rucai.utils.io import atomic_write_json

log = logging.getLogger(__name__)


PAPER_LAYERS = (2048, 1024, 512, 256, 128, 64)  # LC-Rec index/run.sh, MTGRec
CPU_LAYERS = (512, 256, 128, 64)  # ~6x cheaper per epoch on a CPU


AUTHORS_LAYERS = (2048, 1024, 512, 256, 128)  # MTGRec tokenizer/config.yaml hidden_sizes; latent = last
OPTIMIZERS = ("adamw", "adagrad")
LR_SCHEDULES = ("constant", "linear")
KMEANS_INIT_ON = ("first_batch", "all")
INITS = ("xavier_normal", "torch_default")
DEVICES = ("cpu", "cuda", "auto")


@dataclass
class RQVAEConfig:
    layers: list[int] = field(default_factory=lambda: list(CPU_LAYERS))  # PAPER_LAYERS on a GPU
    # int: a latent layer of this size is appended after `layers` (LC-Rec); None: the latent is
    # layers[-1] (MTGRec's hidden_sizes)
    e_dim: int | None = 32
    num_codes: list[int] = field(default_factory=lambda: [256, 256, 256])  # one entry per level
    dropout: float = 0.0
    beta: float = 0.25
    quant_loss_weight: float = 1.0
    kmeans_init: bool = True
    kmeans_iters: int = 100
    ema: bool = False
    ema_decay: float = 0.99
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 1024
    epochs: int = 100
    seed: int = 2024
    keep_last: int | None = 5  # epoch checkpoints kept (None = all)
    optimizer: str = "adamw"  # adamw (LC-Rec) | adagrad (MTGRec learner: adagrad)
    lr_schedule: str = "constant"  # constant (both papers' configs) | linear (decay to 0, no warmup)
    kmeans_init_on: str = "first_batch"  # first_batch (LC-Rec) | all (MTGRec: every training item)
    init: str = "xavier_normal"  # xavier_normal (LC-Rec MLPLayers) | torch_default (MTGRec MLP)
    device: str = "cpu"  # cpu | cuda | auto (cuda when available)

    def __post_init__(self) -> None:
        for name, allowed in (("optimizer", OPTIMIZERS), ("lr_schedule", LR_SCHEDULES),
                              ("kmeans_init_on", KMEANS_INIT_ON), ("init", INITS), ("device", DEVICES)):
            if getattr(self, name) not in allowed:
                raise UserError(f"RQ-VAE {name}={getattr(self, name)!r}; use one of {list(allowed)}")
        if self.e_dim is None and not self.layers:
            raise UserError("RQ-VAE e_dim=null needs a non-empty layers list (its last entry is the latent)")

    @property
    def latent_dim(self) -> int:
        return int(self.layers[-1]) if self.e_dim is None else int(self.e_dim)

    def dims(self, in_dim: int) -> list[int]:
        """Encoder sizes in_dim -> ... -> latent (the decoder mirrors them)."""
        return [in_dim, *self.layers] if self.e_dim is None else [in_dim, *self.layers, self.e_dim]

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> RQVAEConfig:
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        bad = sorted(set(d) - known)
        if bad:
            raise UserError(f"unknown RQ-VAE option(s) {bad}; valid: {sorted(known)}")
        return cls(**d)


# ----------------------------------------------------------------------------- k-means


def kmeans(
    x: torch.Tensor, k: int, iters: int = 100, generator: torch.Generator | None = None
) -> torch.Tensor:
    """k-means++ seeding + Lloyd iterations; returns [k, d] centres. With n <= k points the
    centres are the points themselves (repeated in order to fill k)."""
    x = x.detach().float()
    n = x.shape[0]
    if n <= k:
        idx = torch.arange(k) % n
        return x[idx].clone()
    first = torch.randint(n, (1,), generator=generator)
    centres = [x[first[0]]]
    d2 = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        total = d2.sum()
        if total <= 0:
            j = torch.randint(n, (1,), generator=generator)[0]
        else:
            j = torch.multinomial(d2 / total, 1, generator=generator)[0]
        centres.append(x[j])
        d2 = torch.minimum(d2, ((x - x[j]) ** 2).sum(1))
    c = torch.stack(centres)
    for _ in range(iters):
        assign = torch.cdist(x, c).argmin(1)
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).float()
        new = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], c)
        if torch.allclose(new, c):
            break
        c = new
    return c


# ----------------------------------------------------------------------------- model


def mlp(dims: list[int], dropout: float, init: str = "xavier_normal") -> nn.Sequential:
    mods: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        mods += [nn.Dropout(dropout), nn.Linear(a, b)]
        if i < len(dims) - 2:
            mods.append(nn.ReLU())
    seq = nn.Sequential(*mods)
    if init == "xavier_normal":
        for m in seq:
            if isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)
    return seq


class VectorQuantizer(nn.Module):
    """One codebook level: nearest-codeword assignment, gradient or EMA codebook updates."""

    def __init__(
        self,
        num_codes: int,
        e_dim: int,
        beta: float = 0.25,
        kmeans_init: bool = True,
        kmeans_iters: int = 100,
        ema: bool = False,
        decay: float = 0.99,
        eps: float = 1e-5,
    ):
        super().__init__()
        self.num_codes, self.e_dim, self.beta = num_codes, e_dim, beta
        self.kmeans_iters, self.ema, self.decay, self.eps = kmeans_iters, ema, decay, eps
        self.embedding = nn.Embedding(num_codes, e_dim)
        if kmeans_init:
            self.embedding.weight.data.zero_()
        else:
            self.embedding.weight.data.uniform_(-1.0 / num_codes, 1.0 / num_codes)
        self.embedding.weight.requires_grad_(not ema)
        self.register_buffer("initted", torch.tensor(not kmeans_init))
        self.register_buffer("ema_count", torch.ones(num_codes))
        self.register_buffer("ema_sum", self.embedding.weight.data.clone())

    @property
    def codebook(self) -> torch.Tensor:
        return self.embedding.weight

    @torch.no_grad()
    def init_codebook(self, x: torch.Tensor, generator: torch.Generator | None = None) -> None:
        c = kmeans(x.detach().cpu(), self.num_codes, self.kmeans_iters, generator)  # k-means on the CPU
        self.embedding.weight.data.copy_(c)
        self.ema_sum.copy_(c)
        self.ema_count.fill_(1.0)
        self.initted.fill_(True)

    def nearest(self, x: torch.Tensor) -> torch.Tensor:
        w = self.embedding.weight
        d = (x**2).sum(1, keepdim=True) + (w**2).sum(1)[None, :] - 2 * x @ w.t()
        return d.argmin(1)

    @torch.no_grad()
    def ema_update(self, x: torch.Tensor, idx: torch.Tensor) -> None:
        onehot = F.one_hot(idx, self.num_codes).type_as(x)
        self.ema_count.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        self.ema_sum.mul_(self.decay).add_(onehot.t() @ x, alpha=1 - self.decay)
        n = self.ema_count.sum()
        count = (self.ema_count + self.eps) / (n + self.num_codes * self.eps) * n  # Laplace smoothing
        self.embedding.weight.data.copy_(self.ema_sum / count[:, None])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = self.nearest(x.detach())
        xq = self.embedding(idx)  # the codewords before this batch's EMA update (as MTGRec's EMAVQLayer)
        if self.ema and self.training:
            self.ema_update(x.detach(), idx)
        commitment = F.mse_loss(x, xq.detach())
        loss = self.beta * commitment if self.ema else F.mse_loss(xq, x.detach()) + self.beta * commitment
        xq = x + (xq - x).detach()  # straight-through
        return xq, loss, idx


class ResidualQuantizer(nn.Module):
    def __init__(self, num_codes: list[int], e_dim: int, **kw):
        super().__init__()
        self.levels = nn.ModuleList([VectorQuantizer(k, e_dim, **kw) for k in num_codes])

    @torch.no_grad()
    def init_codebooks(self, z: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """k-means every level on the residuals of all rows of z (MTGRec `generate_codebook`)."""
        residual = z.detach()
        for q in self.levels:
            q.init_codebook(residual, generator)
            residual = residual - q.embedding(q.nearest(residual))

    def forward(self, z: torch.Tensor, generator: torch.Generator | None = None):
        residual, zq = z, torch.zeros_like(z)
        losses, codes = [], []
        for q in self.levels:
            if self.training and not bool(q.initted):
                q.init_codebook(residual.detach(), generator)
            xq, loss, idx = q(residual)
            residual = residual - xq
            zq = zq + xq
            losses.append(loss)
            codes.append(idx)
        return zq, torch.stack(losses).mean(), torch.stack(codes, 1)


class RQVAE(nn.Module):
    def __init__(self, in_dim: int, cfg: RQVAEConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or RQVAEConfig()
        self.in_dim = in_dim
        dims = cfg.dims(in_dim)
        self.encoder = mlp(dims, cfg.dropout, cfg.init)
        self.rq = ResidualQuantizer(
            cfg.num_codes,
            cfg.latent_dim,
            beta=cfg.beta,
            kmeans_init=cfg.kmeans_init,
            kmeans_iters=cfg.kmeans_iters,
            ema=cfg.ema,
            decay=cfg.ema_decay,
        )
        self.decoder = mlp(dims[::-1], cfg.dropout, cfg.init)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        zq, qloss, codes = self.rq(self.encoder(x), generator)
        return self.decoder(zq), qloss, codes

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None):
        out, qloss, codes = self(x, generator)
        recon = F.mse_loss(out, x)
        return recon + self.cfg.quant_loss_weight * qloss, recon, qloss, codes


# ----------------------------------------------------------------------------- codes & stats


def _items(embeddings: np.ndarray | torch.Tensor, padding_row: bool) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(embeddings), dtype=torch.float32)
    return x[1:] if padding_row else x


@torch.no_grad()
def assign_codes(model: RQVAE, embeddings, padding_row: bool = True, batch_size: int = 4096) -> np.ndarray:
    """Codes [N, L] (int64) for the items; row 0 of `embeddings` is padding unless padding_row=False."""
    was = model.training
    model.eval()
    x = _items(embeddings, padding_row)
    dev = _model_device(model)
    out = [model(x[i : i + batch_size].to(dev))[2].cpu() for i in range(0, len(x), batch_size)]
    model.train(was)
    return torch.cat(out).numpy() if out else np.zeros((0, len(model.cfg.num_codes)), dtype=np.int64)


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("RQ-VAE device=cuda but torch sees no GPU; use device=cpu or device=auto")
    return torch.device(device)


def make_optimizer(params: list[torch.nn.Parameter], cfg: RQVAEConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adagrad":  # torch defaults otherwise (eps 1e-10, no lr decay), as MTGRec
        return torch.optim.Adagrad(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def resolve_collisions(codes: np.ndarray, first_id: int = 1) -> dict[int, list[int]]:
    """Append a suffix code: items sharing the same L-code tuple get 0,1,2,... in id order;
    items with a unique tuple get 0. Returns {item_id: [c_1..c_L, suffix]}; all IDs are unique."""
    seen: Counter = Counter()
    out: dict[int, list[int]] = {}
    for row, c in enumerate(np.asarray(codes).tolist()):
        t = tuple(int(v) for v in c)
        out[row + first_id] = [*t, seen[t]]
        seen[t] += 1
    return out


def code_stats(codes: np.ndarray, num_codes: list[int]) -> dict[str, Any]:
    """Per-level usage (fraction of codes used) and perplexity, collision rate (fraction of items
    whose L-code tuple is shared) and the largest group of items sharing a tuple."""
    codes = np.asarray(codes)
    n = len(codes)
    usage, ppl = [], []
    for level, k in enumerate(num_codes):
        cnt = np.bincount(codes[:, level], minlength=k).astype(np.float64) if n else np.zeros(k)
        usage.append(float((cnt > 0).mean()))
        p = cnt[cnt > 0] / max(n, 1)
        ppl.append(float(math.exp(-(p * np.log(p)).sum())) if n else 0.0)
    groups = Counter(map(tuple, codes.tolist()))
    shared = sum(c for c in groups.values() if c > 1)
    return {
        "items": n,
        "usage": usage,
        "perplexity": ppl,
        "collision_rate": shared / max(n, 1),
        "unique_tuples": len(groups),
        "max_collision_group": max(groups.values(), default=0),
    }


# ----------------------------------------------------------------------------- training


def _atomic_torch_save(obj: Any, path: Path) -> None:
    from rucai.utils.io import atomic_writer

    with atomic_writer(path, "wb") as f:
        torch.save(obj, f)


def prune_checkpoints(ck_dir: Path, keep_last: int | None) -> None:
    """Delete all but the `keep_last` newest `epoch_N.pt` (by epoch number: epoch_1000 is newer than
    epoch_999, which a name sort gets wrong)."""
    if keep_last is None:
        return
    cks = sorted(ck_dir.glob("epoch_*.pt"), key=lambda f: int(f.stem.split("_")[1]))
    for old in cks[: -keep_last or None]:
        old.unlink(missing_ok=True)


def load_checkpoint(path: str | os.PathLike) -> RQVAE:
    ck = torch.load(path, map_location="cpu", weights_only=False)
    model = RQVAE(ck["in_dim"], RQVAEConfig(**ck["config"]))
    model.load_state_dict(ck["state_dict"])
    model.eval()
    return model


@torch.no_grad()
def evaluate(model: RQVAE, embeddings, padding_row: bool = True) -> dict[str, Any]:
    was = model.training
    model.eval()
    x = _items(embeddings, padding_row).to(_model_device(model))
    _, recon, qloss, codes = model.loss(x)
    model.train(was)
    return {
        "recon_loss": float(recon),
        "quant_loss": float(qloss),
        **code_stats(codes.cpu().numpy(), model.cfg.num_codes),
    }


def train_rqvae(
    embeddings,
    out_dir: str | os.PathLike | None = None,
    cfg: RQVAEConfig | dict[str, Any] | None = None,
    padding_row: bool = True,
    fit_rows: Sequence[int] | np.ndarray | None = None,
    **overrides: Any,
) -> tuple[RQVAE, dict[str, Any]]:
    """Train an RQ-VAE on item embeddings ([N+1, D] with padding row 0, as `encode_items` returns).

    `fit_rows`: the item rows the RQ-VAE is fit on (0-based after the padding row is dropped, i.e.
    item id - 1 when padding_row=True; MTGRec: the training items); None = all. Codes, statistics
    and semantic_ids.json always cover every item.

    Writes `<out_dir>/rqvae/epoch_XXX.pt` each epoch (the last `keep_last` kept),
    `<out_dir>/semantic_ids.json` ({item_id: [c1..cL, suffix]}) and `<out_dir>/stats.json`.
    Returns (model, stats). Deterministic given cfg.seed.
    """
    if not isinstance(cfg, RQVAEConfig):
        cfg = RQVAEConfig.from_dict(cfg)
    if overrides:
        cfg = RQVAEConfig.from_dict({**asdict(cfg), **overrides})
    x = _items(embeddings, padding_row)
    if x.ndim != 2 or len(x) == 0:
        raise UserError(f"RQ-VAE needs a non-empty [items, dim] embedding matrix, got shape {tuple(x.shape)}")
    if fit_rows is None:
        x_fit = x
    else:
        rows = torch.as_tensor(np.unique(np.asarray(fit_rows, dtype=np.int64)))
        if len(rows) == 0 or int(rows.min()) < 0 or int(rows.max()) >= len(x):
            raise UserError(f"RQ-VAE fit_rows must be non-empty row indices in 0..{len(x) - 1}")
        x_fit = x[rows]
    dev = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = RQVAE(x.shape[1], cfg).to(dev)
    opt = make_optimizer([p for p in model.parameters() if p.requires_grad], cfg)
    n_fit = len(x_fit)
    steps_per_epoch = math.ceil(n_fit / cfg.batch_size)
    total_steps = max(cfg.epochs * steps_per_epoch, 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, (lambda s: max(0.0, 1.0 - s / total_steps)) if cfg.lr_schedule == "linear" else (lambda s: 1.0)
    )
    if cfg.kmeans_init and cfg.kmeans_init_on == "all":
        with torch.no_grad():
            z = torch.cat([model.encoder(x_fit[i : i + 4096].to(dev)) for i in range(0, n_fit, 4096)])
        model.rq.init_codebooks(z, gen)
    ck_dir = Path(out_dir) / "rqvae" if out_dir is not None else None
    history: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        perm = torch.randperm(n_fit, generator=gen)
        tot = rec = 0.0
        for i in range(0, n_fit, cfg.batch_size):
            xb = x_fit[perm[i : i + cfg.batch_size]].to(dev)
            loss, recon, _, _ = model.loss(xb, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item() * len(xb)
            rec += recon.item() * len(xb)
        row = {"epoch": epoch, "loss": tot / n_fit, "recon_loss": rec / n_fit}
        history.append(row)
        # only the epochs that are kept are written (the last `keep_last`; all when None): the
        # paper's MLP is ~28 MB, and writing every epoch of 300 took most of an Office run
        if ck_dir is not None and (cfg.keep_last is None or epoch > cfg.epochs - cfg.keep_last):
            _atomic_torch_save(
                {
                    "epoch": epoch,
                    "in_dim": x.shape[1],
                    "config": asdict(cfg),
                    "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                },
                ck_dir / f"epoch_{epoch:03d}.pt",
            )
            prune_checkpoints(ck_dir, cfg.keep_last)
    train_s = time.perf_counter() - t0
    final = evaluate(model, x, padding_row=False)
    codes = assign_codes(model, x, padding_row=False)
    ids = resolve_collisions(codes)
    stats = {
        **final,
        "fit_items": n_fit,
        "suffix_max": max((v[-1] for v in ids.values()), default=0),
        "epochs": cfg.epochs,
        "train_seconds": train_s,
        "seconds_per_epoch": train_s / max(cfg.epochs, 1),
        "config": asdict(cfg),
        "history": history,
    }
    if out_dir is not None:
        atomic_write_json(Path(out_dir) / "semantic_ids.json", {str(k): v for k, v in ids.items()})
        atomic_write_json(Path(out_dir) / "stats.json", stats)
    return model, stats


def semantic_ids_by_item(ids: dict[int, list[int]]) -> dict[tuple[int, ...], list[int]]:
    """Inverse map (code tuple -> item ids), handy for checking uniqueness."""
    inv: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, c in ids.items():
        inv[tuple(c)].append(i)
    return dict(inv)


# ----------------------------------------------------------------------------- CLI


# MTGRec tokenizer/config.yaml + layers.py (the CLI's --authors; rucai.mtgrec.config.RQVAESettings)
AUTHORS_RECIPE: dict[str, Any] = {
    "optimizer": "adagrad", "lr": 1e-3, "lr_schedule": "constant", "weight_decay": 0.0,
    "layers": list(AUTHORS_LAYERS), "e_dim": None, "ema": True, "kmeans_init": True, "kmeans_init_on": "all",
    "init": "torch_default", "batch_size": 2048, "num_codes": [256, 256, 256], "beta": 0.25,
}


def _int_or_none(v: str) -> int | None:
    return None if v.lower() in ("null", "none") else int(v)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rucai.rec.rqvae", description=__doc__.split("\n\n")[0])
    p.add_argument("--items", required=True, help="folder with <name>.inter.json / <name>.item.json")
    p.add_argument("--name", required=True, help="dataset name, e.g. Office_Products")
    p.add_argument("--out", required=True, help="output folder (rqvae/, semantic_ids.json, stats.json)")
    p.add_argument("--epochs", type=int, default=RQVAEConfig.epochs)
    p.add_argument("--batch-size", type=int, default=RQVAEConfig.batch_size)
    p.add_argument("--lr", type=float, default=RQVAEConfig.lr)
    p.add_argument("--e-dim", type=_int_or_none, default=RQVAEConfig.e_dim,
                   help="latent size appended after --layers; null: the last of --layers is the latent")
    p.add_argument("--layers", type=int, nargs="+", default=None)
    p.add_argument("--num-codes", type=int, nargs="+", default=None)
    p.add_argument("--ema", action="store_true")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=RQVAEConfig.optimizer)
    p.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=RQVAEConfig.lr_schedule)
    p.add_argument("--weight-decay", type=float, default=RQVAEConfig.weight_decay)
    p.add_argument("--kmeans-init-on", choices=KMEANS_INIT_ON, default=RQVAEConfig.kmeans_init_on)
    p.add_argument("--init", choices=INITS, default=RQVAEConfig.init)
    p.add_argument("--device", choices=DEVICES, default=RQVAEConfig.device)
    p.add_argument("--pca-dim", type=_int_or_none, default=None, help="PCA-whiten the embeddings first (fit on all items)")
    p.add_argument("--fit-on", choices=("all", "train"), default="all",
                   help="train: fit on items[:-2] of every user's sequence (MTGRec); codes for all items")
    p.add_argument("--authors", action="store_true",
                   help="MTGRec's recipe (tokenizer/config.yaml): overrides the options above except --epochs, --device")
    p.add_argument("--seed", type=int, default=RQVAEConfig.seed)
    p.add_argument("--keep-last", type=int, default=RQVAEConfig.keep_last)
    p.add_argument("--encoder", default=None)
    p.add_argument("--fields", nargs="+", default=None)
    p.add_argument("--cache-dir", default=None, help="embedding cache (default: <out>/cache)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from rucai.data.amazon import load_lcrec
    from rucai.rec.embeddings import DEFAULT_ENCODER, DEFAULT_FIELDS, encode_items

    try:
        data = load_lcrec(a.items, a.name)
        if not data.item_text:
            raise UserError(f"{a.items}/{a.name}.item.json is missing or empty; semantic IDs need item text")
        t = time.perf_counter()
        emb = encode_items(
            data.item_text,
            encoder=a.encoder or DEFAULT_ENCODER,
            fields=a.fields or DEFAULT_FIELDS,
            num_items=data.num_items,
            cache_dir=a.cache_dir or Path(a.out) / "cache",
        )
        enc_s = time.perf_counter() - t
        print(f"embeddings {emb.shape} in {enc_s:.1f}s")
        over: dict[str, Any] = {
            "epochs": a.epochs,
            "batch_size": a.batch_size,
            "lr": a.lr,
            "e_dim": a.e_dim,
            "ema": a.ema,
            "seed": a.seed,
            "keep_last": a.keep_last,
            "optimizer": a.optimizer,
            "lr_schedule": a.lr_schedule,
            "weight_decay": a.weight_decay,
            "kmeans_init_on": a.kmeans_init_on,
            "init": a.init,
            "device": a.device,
        }
        if a.layers:
            over["layers"] = a.layers
        if a.num_codes:
            over["num_codes"] = a.num_codes
        pca_dim, fit_on = a.pca_dim, a.fit_on
        if a.authors:
            over.update(AUTHORS_RECIPE)
            pca_dim, fit_on = 128, "train"
        x, padding = emb, True
        if pca_dim:
            from rucai.rec.embeddings import pca_whiten

            x, padding = pca_whiten(emb[1:], pca_dim), False
        rows = None
        if fit_on == "train":
            from rucai.data.sequential import train_items

            rows = [i - 1 for i in train_items(data.sequences)]
        _, stats = train_rqvae(x, a.out, padding_row=padding, fit_rows=rows, **over)
        stats.update(pca_dim=pca_dim, fit_on=fit_on)
    except UserError as e:
        print(f"error: {e}")
        return 2
    stats["encode_seconds"] = enc_s
    atomic_write_json(Path(a.out) / "stats.json", stats)
    show = {k: v for k, v in stats.items() if k not in ("history", "config")}
    for k, v in show.items():
        print(f"{k}: {[round(x, 4) for x in v] if isinstance(v, list) else v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
