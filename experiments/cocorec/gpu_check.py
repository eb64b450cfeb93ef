"""CoCoRec at the paper's Instruments settings on random data, one GPU, < 2 minutes.

    python experiments/cocorec/gpu_check.py              # CUDA, bf16 autocast
    python experiments/cocorec/gpu_check.py --cpu --items 3000 --steps 2   # the same path on CPU

Random item codes (20 per item, tokens in their level's range) and 5 random 128-d text views for
24,587 items (the Instruments item count), random prefixes of history <= 20, batch 400, 24,000
shared negatives, hidden 128 / inner 512: the `experiment=cocorec/instruments` model. Runs
`--steps` optimizer steps and one full-ranking evaluation batch; prints ONE JSON line with
seconds per step, peak GPU memory and the losses (finite).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> int:
    import torch

    from rucai.cocorec.model import CoCoRec

    p = argparse.ArgumentParser()
    p.add_argument("--items", type=int, default=24587)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cpu", action="store_true")
    a = p.parse_args()
    dev = torch.device("cpu" if a.cpu or not torch.cuda.is_available() else "cuda")
    n, c, k, v, d, b = a.items, 20, 256, 5, 128, 400
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, k, (n + 1, c), generator=g) + torch.arange(c) * k + 1
    codes[0] = 0
    text = torch.randn(v, n + 1, d, generator=g)
    text[:, 0] = 0
    torch.manual_seed(0)
    model = CoCoRec(num_items=n, item_codes=codes, text_vectors=text, code_vocab=c * k + 1, num_codes=c,
                    hidden_size=d, inner_size=512, neg_num=min(24000, n - b - 1), mlm_weight=0.6, cl_weight=0.4,
                    dropout=0.3, fusion_dropout=0.3, warmup_steps=500).to(dev)
    model.log = lambda *x, **y: None
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)

    def batch():
        lengths = torch.randint(1, 21, (b,), generator=g)
        seq = torch.randint(1, n + 1, (b, 20), generator=g)
        seq[torch.arange(20)[None] >= lengths[:, None]] = 0
        return {"seq": seq.to(dev), "lengths": lengths.to(dev), "target": torch.randint(1, n + 1, (b,), generator=g).to(dev)}

    ac = torch.autocast(dev.type, dtype=torch.bfloat16)
    times, losses = [], []
    for i in range(a.steps + 1):
        bt = batch()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with ac:
            loss = model.training_step(bt, i)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i:  # the first step warms up kernels
            times.append(time.perf_counter() - t0)
        losses.append(float(loss))
    model.eval()
    with torch.no_grad(), ac:
        model.on_test_epoch_start()
        bt = batch()
        scores = model.full_scores(bt["seq"], bt["lengths"])
        model.on_test_epoch_end()
    out = {"check": "cocorec_instruments_random", "device": str(dev),
           "gpu": torch.cuda.get_device_name(0) if dev.type == "cuda" else None, "items": n,
           "sec_per_step": round(sum(times) / max(len(times), 1), 4), "steps": len(times),
           "est_epoch_min_512k_samples": round(sum(times) / max(len(times), 1) * 511836 / 400 / 60, 2),
           "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if dev.type == "cuda" else None,
           "loss_first_last": [round(losses[0], 4), round(losses[-1], 4)],
           "finite": all(x == x and abs(x) != float("inf") for x in losses),
           "padding_never_ranked": bool(torch.isinf(scores[:, 0]).all())}
    print(json.dumps(out))
    return 0 if out["finite"] and out["padding_never_ranked"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
