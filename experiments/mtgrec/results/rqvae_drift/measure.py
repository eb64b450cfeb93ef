"""Adjacent-epoch drift of MTGRec's RQ-VAE tokenizers on Amazon 2018 Office (all 4,905 users).

    RUCAI_DATA_DIR=/work/shared/data OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python \
        experiments/mtgrec/results/rqvae_drift/measure.py --recipe authors --epochs 300 --k 25

Recipes: `authors` = MTGRec tokenizer/config.yaml (Adagrad, 2048-1024-512-256-128 with the latent
the last entry, EMA, k-means on all training items, torch default init, batch 2048, fit on training
items); `adamw` = the previous office_cpu.yaml block (AdamW wd 1e-4, 512-256-128-64 + a 32-d latent,
EMA, k-means on the first batch, xavier init, batch 1024, fit on all items); `authors_adamw` = the
authors' recipe with only the optimizer switched to AdamW (wd 0); `adamw_arch_adagrad` = the `adamw`
recipe with only the optimizer switched to Adagrad (wd 0); `authors_xavier` = the authors' recipe with
LC-Rec's xavier-normal init instead of nn.Linear's default. All: MiniLM embeddings of
title/brand/description, PCA-128 whitened (fit on all items), seed 2024, 3 x 256 codes.
Writes `<recipe>_e<N>.tokenizers.json` (manifest, no checkpoints) next to this file and prints a row.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

RECIPES = {
    "authors": dict(optimizer="adagrad", layers=[2048, 1024, 512, 256, 128], e_dim=None, ema=True,
                    kmeans_init_on="all", init="torch_default", weight_decay=0.0, batch_size=2048, lr=1e-3),
    "adamw": dict(optimizer="adamw", layers=[512, 256, 128, 64], e_dim=32, ema=True,
                  kmeans_init_on="first_batch", init="xavier_normal", weight_decay=1e-4, batch_size=1024, lr=1e-3),
    "authors_adamw": dict(optimizer="adamw", layers=[2048, 1024, 512, 256, 128], e_dim=None, ema=True,
                          kmeans_init_on="all", init="torch_default", weight_decay=0.0, batch_size=2048, lr=1e-3),
    "adamw_arch_adagrad": dict(optimizer="adagrad", layers=[512, 256, 128, 64], e_dim=32, ema=True,
                               kmeans_init_on="first_batch", init="xavier_normal", weight_decay=0.0,
                               batch_size=1024, lr=1e-3),
}
RECIPES["authors_xavier"] = {**RECIPES["authors"], "init": "xavier_normal"}
FIT_TRAIN = {"authors": True, "adamw": False, "authors_adamw": True, "adamw_arch_adagrad": False,
             "authors_xavier": True}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--recipe", choices=sorted(RECIPES), required=True)
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--k", type=int, default=25)
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--work", default="outputs/rqvae_drift")
    a = p.parse_args()

    from rucai.data.amazon import load_lcrec
    from rucai.data.sequential import train_items
    from rucai.mtgrec.tokenizers import build_tokenizers
    from rucai.rec.embeddings import encode_items

    data = load_lcrec(Path(os.environ.get("RUCAI_DATA_DIR", "/work/shared/data")) / "amazon18_office", "Office_Products")
    emb = encode_items(data.item_text, encoder="all-minilm-l6-v2", fields=("title", "brand", "description"),
                       cache_dir="outputs/cache", num_items=data.num_items)
    fit = train_items(data.sequences) if FIT_TRAIN[a.recipe] else None
    name = f"{a.recipe}_e{a.epochs}"
    work = Path(a.work) / name
    t0 = time.time()
    man = build_tokenizers(emb, work, num_tokenizers=a.k, mode="epochs", pca_dim=128,
                           rqvae={**RECIPES[a.recipe], "epochs": a.epochs}, seed=a.seed, fit_items=fit)
    man["wall_seconds"] = round(time.time() - t0, 1)
    man["recipe"] = a.recipe
    man["num_users"] = len(data.sequences)
    for f in man["rqvae_final"]:
        f.pop("history", None)
    (HERE / f"{name}.tokenizers.json").write_text(json.dumps(man, indent=1))
    shutil.rmtree(work / "rqvae", ignore_errors=True)  # checkpoints stay out of the repo and off the disk
    print(name, "K", a.k, "mean adjacent drift", round(man["mean_adjacent_changed"], 4),
          "last-5", [round(d["changed"], 3) for d in man["adjacent_drift"][-4:]],
          "s/epoch", round(man["rqvae_final"][0]["seconds_per_epoch"], 2), flush=True)


if __name__ == "__main__":
    main()
