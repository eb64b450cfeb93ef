"""Cost of the GRSU simulator's item scoring with and without the shared-prefix path, in one run.

    RUCAI_DATA_DIR=../shared/data python -m rucai.bench.grsu_score --turns 6 --items 16 --out score.json

For each of the first `--turns` evaluation turns of ReDial (the grsu split), `--items` random
catalogue items are scored the way `rucai.grsu.simulator.Simulator.score` scores a search node's
items (one prompt per item, the dialogue first), by SmolLM2-135M-Instruct through the hf backend:
once as full prompts (`_last_logits`) and once with the dialogue run once (`_last_logits_shared_prefix`),
the two alternating turn by turn so the machine's load hits them alike. Prints seconds per score for
each, their ratio, and the largest difference between the two paths' scores (it should be float
rounding only).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rucai.bench.grsu_score", description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.path.join(os.environ.get("RUCAI_DATA_DIR", "data"), "redial"))
    ap.add_argument("--model", default="smollm2-135m-instruct", help="alias, folder, .gguf or HF id")
    ap.add_argument("--turns", type=int, default=6)
    ap.add_argument("--items", type=int, default=16, help="items scored per turn (one batch)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write the result as JSON here")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    import rucai.llm.hf as hf
    from rucai import llm
    from rucai.errors import UserError
    from rucai.grsu.data import load_catalogue, load_redial, split_dialogs
    from rucai.grsu.simulator import Simulator

    torch.set_num_threads(args.threads)
    try:
        turns = split_dialogs(load_redial(args.data_dir, only_new=True), seed=0)[1][: args.turns]
        catalogue = load_catalogue(args.data_dir)
        model = llm.build({"backend": "hf", "model": args.model, "batch_size": args.items, "device": "cpu"})
    except UserError as e:
        print(f"error: {e}")
        return 2
    rng = random.Random(args.seed)
    ids = sorted(catalogue)
    times = {"full": 0.0, "shared_prefix": 0.0}
    scores: dict[str, list[float]] = {"full": [], "shared_prefix": []}
    for n, t in enumerate(turns):
        items = rng.sample(ids, args.items)
        for path in (("full", "shared_prefix") if n % 2 == 0 else ("shared_prefix", "full")):
            model.prefix_min_tokens = hf.PREFIX_MIN_TOKENS if path == "shared_prefix" else 10**9
            sim = Simulator(model, catalogue)  # a fresh score cache
            t0 = time.perf_counter()
            scores[path] += sim.score(t.key, t.dialogue, items)
            times[path] += time.perf_counter() - t0
    n_scores = len(turns) * args.items
    res = {
        "model": args.model, "turns": len(turns), "items_per_turn": args.items, "threads": args.threads,
        "s_per_score_full": times["full"] / n_scores, "s_per_score_shared_prefix": times["shared_prefix"] / n_scores,
        "speedup": times["full"] / max(times["shared_prefix"], 1e-9),
        "max_abs_score_diff": max(abs(a - b) for a, b in zip(scores["full"], scores["shared_prefix"], strict=True)),
    }
    print("| path | s / score |\n|---|---|")
    print(f"| full prompts | {res['s_per_score_full']:.3f} |\n| shared prefix | {res['s_per_score_shared_prefix']:.3f} |")
    print(f"speed-up {res['speedup']:.2f}x; largest score difference {res['max_abs_score_diff']:.2e}")
    if args.out:
        from rucai.utils.io import atomic_write_text

        atomic_write_text(args.out, json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
