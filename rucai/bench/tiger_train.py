"""TIGER training/decoding speed, today's path vs each speed-up, measured side by side in one run.

    python -m rucai.bench.tiger_train --data-dir ../shared/data/amazon18_office --threads 1 \
        --out outputs/bench/tiger_train.json

Real Office batches (LOO training prefixes, history 20) through a paper-size TIGER (4+4 layers,
d_model 128, d_ff 1024, 6 heads; `conf/model/tiger.yaml`) with random semantic IDs of the same
shape (3 x 256 + a collision level: the codes' values do not change the cost). Variants:

  fp32_random    today: random batches (each padded to its longest history), fp32
  fp32_grouped   + length-grouped batches (`data.length_grouping=true`)
  bf16_grouped   + bf16 autocast (`hardware.precision=bf16-mixed`)
  bf16_grouped_fastdrop  + cheaper dropout masks (`model.fast_dropout=true`, rucai.models.layers)
  bf16_compiled  + torch.compile of the T5 (`model.compile=true`), with --compile

Training: forward + backward + AdamW step per batch; the variants take turns (round-robin) so
load on a shared machine hits them alike; seconds per step and the epoch estimate (mean step x
batches per epoch). Decoding: constrained beam search (beam 20) over validation users, in the
data's order vs sorted by length, fp32 vs bf16.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch


def _batches(dm, grouped: bool, epoch: int, seed: int) -> list[list[int]]:
    from rucai.data.sequential import LengthGroupedSampler

    ds = dm._splits["train"]
    bs = dm.batch_size
    if grouped:
        lengths = [min(len(h), dm.max_len) for h, _ in ds.pairs]
        return [b.tolist() for b in LengthGroupedSampler(lengths, bs, seed=seed).batches(epoch)]
    perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed + epoch)).tolist()
    return [perm[i:i + bs] for i in range(0, len(perm), bs)]


def _collate(dm, idx: list[int]) -> dict[str, torch.Tensor]:
    from rucai.data.sequential import collate_right_padded

    return collate_right_padded([dm._splits["train"][i] for i in idx], dm.max_len)


def _model(num_items: int, max_len: int, seed: int, **kw):
    from rucai.models.tiger import TIGER, random_codes

    torch.manual_seed(seed)
    return TIGER(num_items=num_items, item_codes=random_codes(num_items, seed=seed), max_len=max_len,
                 codebook_size=256, topk=(5, 10), **kw)


def _train_step(model, opt, batch, bf16: bool) -> float:
    t0 = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        ids, mask = model.encode_inputs(batch["seq"], batch["lengths"])
        loss = model.train_t5()(input_ids=ids, attention_mask=mask, labels=model.target_tokens(batch["target"])).loss
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - t0


def bench_train(dm, variants: list[str], steps: int, rounds: int, seed: int) -> dict[str, Any]:
    n_batches = len(_batches(dm, False, 0, seed))
    out: dict[str, Any] = {"batches_per_epoch": n_batches}
    lengths = [min(len(h), dm.max_len) for h, _ in dm.split("train").pairs]
    for grouped in (False, True):  # exact, over a whole epoch (the timed steps are a sample)
        widths = [max(lengths[i] for i in b) * 4 + 1 for b in _batches(dm, grouped, 0, seed)]
        out[f"epoch_mean_input_width_{'grouped' if grouped else 'random'}"] = round(statistics.mean(widths), 1)
    out["mean_history_tokens"] = round(statistics.mean(lengths) * 4 + 1, 1)
    setups = {}
    for v in variants:
        model = _model(dm.num_items, dm.max_len, seed, compile=v.endswith("compiled"),
                       fast_dropout=v.endswith(("fastdrop", "compiled"))).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
        batches = _batches(dm, v != "fp32_random", 0, seed)
        # a sample of the epoch's batches stratified by width (evenly spaced quantiles of the batch
        # widths, in a seeded random order), so the sample's mean width is the epoch's
        n = steps * rounds
        ranked = sorted(batches, key=lambda b: max(lengths[i] for i in b))
        sample = [ranked[min(len(ranked) - 1, int((k + 0.5) * len(ranked) / n))] for k in range(n)]
        pick = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
        setups[v] = {"model": model, "opt": opt, "batches": [sample[i] for i in pick], "times": [], "pos": 0,
                     "tokens": []}
    for v, s in setups.items():  # warm-up (compilation for the compiled variant)
        t0 = time.perf_counter()
        for _ in range(2):
            _train_step(s["model"], s["opt"], _collate(dm, s["batches"][s["pos"]]), v.startswith("bf16"))
            s["pos"] += 1
        s["warmup_seconds"] = time.perf_counter() - t0
        s["pos"] = 0  # the timed steps cover the whole stratified sample
    for _ in range(rounds):
        for v, s in setups.items():
            for _ in range(steps):
                b = _collate(dm, s["batches"][s["pos"] % len(s["batches"])])
                s["tokens"].append(int(b["lengths"].max()) * 4 + 1)
                s["times"].append(_train_step(s["model"], s["opt"], b, v.startswith("bf16")))
                s["pos"] += 1

    base = statistics.mean(setups[variants[0]]["times"])
    for v, s in setups.items():
        m = statistics.mean(s["times"])
        out[v] = {"s_per_step": round(m, 4), "s_per_step_std": round(statistics.stdev(s["times"]), 4),
                  "steps": len(s["times"]), "epoch_minutes_est": round(m * n_batches / 60, 2),
                  "speedup_vs_" + variants[0]: round(base / m, 2),
                  "sample_mean_input_width": round(statistics.mean(s["tokens"]), 1),
                  "warmup_seconds": round(s["warmup_seconds"], 1)}
    return out


@torch.no_grad()
def bench_decode(dm, users: int, beams: int, seed: int, batch_size: int) -> dict[str, Any]:
    from rucai.data.sequential import collate_right_padded

    model = _model(dm.num_items, dm.max_len, seed, fast_dropout=False).eval()
    pairs = dm._splits["valid"].pairs[:users]
    orders = {"data_order": list(range(len(pairs))),
              "length_sorted": sorted(range(len(pairs)), key=lambda i: -len(pairs[i][0]))}
    out: dict[str, Any] = {}
    for name, order in orders.items():
        for bf16 in (False, True):
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                for s in range(0, len(order), batch_size):
                    b = collate_right_padded([pairs[i] for i in order[s:s + batch_size]], dm.max_len)
                    model.recommend(b["seq"], b["lengths"], num_beams=beams)
            out[f"{name}_{'bf16' if bf16 else 'fp32'}"] = round(len(pairs) / (time.perf_counter() - t0), 1)
    return {"users_per_s": out, "users": len(pairs), "beams": beams}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rucai.bench.tiger_train", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.path.join(os.environ.get("RUCAI_DATA_DIR", "data"), "amazon18_office"))
    p.add_argument("--name", default="Office_Products")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=4, help="steps per variant per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="also time torch.compile (minutes of compilation)")
    p.add_argument("--decode-users", type=int, default=512, help="0: skip the decoding benchmark")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    from rucai.data.amazon import LCRecDataModule
    from rucai.errors import UserError

    torch.set_num_threads(a.threads)
    try:
        dm = LCRecDataModule(dir=a.data_dir, name=a.name, max_len=20, batch_size=256)
        dm.setup("fit")
    except (UserError, FileNotFoundError) as e:
        print(f"error: {e}")
        return 2
    variants = ["fp32_random", "fp32_grouped", "bf16_grouped", "bf16_grouped_fastdrop"] + (
        ["bf16_compiled"] if a.compile else [])
    res: dict[str, Any] = {"threads": a.threads, "machine": os.uname().nodename, "load_avg_start": os.getloadavg(),
                           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                           "model": "TIGER 4+4 layers, d_model 128, d_ff 1024, 6 heads, d_kv 64, batch 256"}
    res["train"] = bench_train(dm, variants, a.steps, a.rounds, a.seed)
    if a.decode_users:
        res["decode"] = bench_decode(dm, a.decode_users, 20, a.seed, 256)
    res["load_avg_end"] = os.getloadavg()
    print(json.dumps(res, indent=1))
    if a.out:
        from rucai.utils.io import atomic_write_json

        atomic_write_json(Path(a.out), res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
