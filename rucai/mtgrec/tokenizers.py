"""MTGRec stage 1: K semantically related item tokenizers from one RQ-VAE, plus drift statistics.

As the authors' code (zhengbw0324/MTGRec, `tokenizer/`): item text embeddings are PCA-reduced and
whitened (`sent_emb_pca: 128`, sklearn `PCA(whiten=True)`), one RQ-VAE is trained (EMA codebooks,
`vq_type: ema`), and the checkpoints of the last K adjacent epochs each define a tokenizer
(`generate_tokens.py`, `sem_id_epochs` in `pretrain.sh`); collisions get an extra code level.
The "random" mode (an ablation) instead trains K RQ-VAEs from unrelated seeds and takes each one's
final epoch.

Artifacts in `<dir>/`: `tok_XX.json` ({item: [c1..cL, suffix]}), `tokenizers.json` (manifest with
the epochs/seeds, per-tokenizer code statistics and the drift between adjacent tokenizers) and
`rqvae*/` checkpoints. `load_tokenizers(dir)` reads them back.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from rucai.errors import UserError
from rucai.rec.embeddings import pca_whiten  # noqa: F401  (re-exported: moved to rucai.rec.embeddings)
from rucai.utils.io import atomic_write_json

log = logging.getLogger(__name__)

MANIFEST = "tokenizers.json"


def drift(a: dict[int, list[int]], b: dict[int, list[int]]) -> dict[str, Any]:
    """How many items change their ID between tokenizers a and b: whole ID, first code, per level."""
    items = sorted(a)
    ca = np.array([a[i] for i in items])
    cb = np.array([b[i] for i in items])
    diff = ca != cb
    return {
        "changed": float(diff.any(1).mean()),
        "changed_first_code": float(diff[:, 0].mean()),
        "changed_per_level": [float(v) for v in diff.mean(0)],
    }


def collision_free(ids: dict[int, list[int]]) -> bool:
    return len({tuple(v) for v in ids.values()}) == len(ids)


def _codes_at(ckpt: Path, x: np.ndarray) -> dict[int, list[int]]:
    from rucai.rec.rqvae import assign_codes, load_checkpoint, resolve_collisions

    return resolve_collisions(assign_codes(load_checkpoint(ckpt), x, padding_row=False))


def build_tokenizers(
    embeddings: np.ndarray,
    out_dir: str | Path,
    num_tokenizers: int = 5,
    mode: str = "epochs",
    pca_dim: int | None = 128,
    rqvae: dict[str, Any] | None = None,
    seed: int = 2024,
    fit_items: Any = None,
) -> dict[str, Any]:
    """Train the RQ-VAE(s) on `embeddings` ([N+1, D], row 0 padding) and write K tokenizers.

    PCA whitening is fit on every item (as the authors' `main.py`); the RQ-VAE is fit on the items
    `fit_items` (ids 1..N; the authors: items in the training part of some user's sequence, see
    `rucai.data.sequential.train_items`; None = all items) and tokenizes all items.

    mode="epochs": one RQ-VAE, tokenizers = its last K epoch checkpoints (MTGRec).
    mode="random": K RQ-VAEs with seeds seed..seed+K-1, tokenizers = their final epochs (ablation).
    Returns the manifest (also written to `<out_dir>/tokenizers.json`).
    """
    from rucai.rec.rqvae import RQVAEConfig, code_stats, train_rqvae

    if mode not in ("epochs", "random"):
        raise UserError(f"method.tokenizers.mode={mode!r}; use epochs (last K RQ-VAE epochs) or random")
    K = int(num_tokenizers)
    if K < 1:
        raise UserError(f"method.tokenizers.num_tokenizers={K}; needs at least 1")
    out = Path(out_dir)
    x = np.asarray(embeddings, dtype=np.float32)[1:]
    if pca_dim:
        x = pca_whiten(x, int(pca_dim))
    cfg = RQVAEConfig.from_dict({**(rqvae or {}), "seed": seed})
    if mode == "epochs" and cfg.epochs < K:
        raise UserError(f"RQ-VAE epochs={cfg.epochs} < num_tokenizers={K}; raise method.tokenizers.rqvae.epochs")
    rows = None if fit_items is None else np.asarray(sorted({int(i) for i in fit_items}), dtype=np.int64) - 1
    t0 = time.perf_counter()
    sources: list[dict[str, Any]] = []
    tokenizers: list[dict[int, list[int]]] = []
    rq_stats: list[dict[str, Any]] = []
    if mode == "epochs":
        _, st = train_rqvae(x, out / "rqvae", cfg=cfg, padding_row=False, fit_rows=rows, keep_last=K)
        rq_stats.append({k: v for k, v in st.items() if k != "history"})
        for e in range(cfg.epochs - K + 1, cfg.epochs + 1):
            tokenizers.append(_codes_at(out / "rqvae" / "rqvae" / f"epoch_{e:03d}.pt", x))
            sources.append({"rqvae_seed": seed, "epoch": e})
    else:
        for k in range(K):
            sub = out / f"rqvae_seed{seed + k}"
            _, st = train_rqvae(x, sub, cfg=cfg, padding_row=False, fit_rows=rows, seed=seed + k, keep_last=1)
            rq_stats.append({k2: v for k2, v in st.items() if k2 != "history"})
            tokenizers.append(_codes_at(sub / "rqvae" / f"epoch_{cfg.epochs:03d}.pt", x))
            sources.append({"rqvae_seed": seed + k, "epoch": cfg.epochs})
    files = []
    per_tok = []
    for k, ids in enumerate(tokenizers):
        if not collision_free(ids):  # resolve_collisions guarantees this; never write a bad tokenizer
            raise RuntimeError(f"tokenizer {k} has colliding IDs")
        f = f"tok_{k:02d}.json"
        atomic_write_json(out / f, {str(i): v for i, v in ids.items()})
        files.append(f)
        codes = np.array([ids[i][:-1] for i in sorted(ids)])
        st = code_stats(codes, cfg.num_codes)
        per_tok.append({"collision_rate": st["collision_rate"], "suffix_max": max(v[-1] for v in ids.values()),
                        "usage": st["usage"], "perplexity": st["perplexity"]})
    adjacent = [drift(tokenizers[k], tokenizers[k + 1]) for k in range(K - 1)]
    manifest = {
        "mode": mode,
        "num_tokenizers": K,
        "files": files,
        "sources": sources,
        "num_items": len(tokenizers[0]),
        "num_levels": len(next(iter(tokenizers[0].values()))),
        "codebook_size": max(max(cfg.num_codes), 1 + max(p["suffix_max"] for p in per_tok)),
        "pca_dim": pca_dim,
        "fit_items": len(x) if rows is None else int(len(rows)),
        "rqvae": asdict(cfg),
        "rqvae_final": rq_stats,
        "per_tokenizer": per_tok,
        "adjacent_drift": adjacent,
        "first_vs_last_drift": drift(tokenizers[0], tokenizers[-1]),
        "mean_adjacent_changed": float(np.mean([d["changed"] for d in adjacent])) if adjacent else 0.0,
        "mean_adjacent_changed_first_code": (
            float(np.mean([d["changed_first_code"] for d in adjacent])) if adjacent else 0.0),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    atomic_write_json(out / MANIFEST, manifest)
    return manifest


def load_tokenizers(dir: str | Path) -> tuple[list[dict[int, list[int]]], dict[str, Any]]:
    d = Path(dir)
    man = d / MANIFEST
    if not man.is_file():
        raise UserError(f"{man} not found; run task=mtgrec.tokenizers first or set method.tokenizers.dir")
    manifest = json.loads(man.read_text())
    toks = []
    for f in manifest["files"]:
        raw = json.loads((d / f).read_text())
        toks.append({int(k): [int(c) for c in v] for k, v in raw.items()})
    return toks, manifest
