"""GRSU's search vs the CRS alone vs random-reward search, on the same evaluation turns, with paired
bootstrap intervals over turns.

    python experiments/grsu/compare_turns.py SIM_RUN RANDOM_RUN [--metrics Recall@10,NDCG@10,Recall@50]
           [--resamples 10000] [--seed 0] [--out table.md]

SIM_RUN and RANDOM_RUN are `grsu.evaluate` run folders (`method.search.reward=simulator` and `=random`)
holding `turns.jsonl`. Every turn both hold is scored with the task's own metrics
(`rucai.grsu.metrics.rank_metrics`: per label, averaged within a turn); the table gives each method's
mean over those turns, and each difference of interest with a 95% paired bootstrap interval (turns
resampled with replacement). A difference whose interval contains 0 is "not separable".
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from rucai.grsu.metrics import rank_metrics  # noqa: E402

POOLS = ("mean", "sum", "vote")


def load(run: Path) -> dict[str, dict]:
    path = run / "turns.jsonl"
    if not path.is_file():
        raise SystemExit(f"error: {path} not found: give a grsu.evaluate run folder")
    return {r["turn"]: r for r in map(json.loads, path.read_text().splitlines()) if r}


def per_turn(recs: list[dict], column: str, metric: str) -> list[float]:
    """The turn's score: its labels' values averaged (the task's `mean_metrics(per="turn")` before the mean
    over turns)."""
    out = []
    for r in recs:
        v = rank_metrics(r[column], r["labels"])[metric]
        out.append(sum(v) / len(v))
    return out


def bootstrap(diff: list[float], resamples: int, seed: int) -> tuple[float, float]:
    rng, n = random.Random(seed), len(diff)
    means = sorted(sum(diff[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    return means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sim_run", type=Path)
    ap.add_argument("random_run", type=Path)
    ap.add_argument("--metrics", default="Recall@10,NDCG@10,Recall@50")
    ap.add_argument("--resamples", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    sim, rnd = load(args.sim_run), load(args.random_run)
    keys = [k for k in sim if k in rnd]
    if not keys:
        raise SystemExit("error: the two runs share no evaluated turn")
    s, r = [sim[k] for k in keys], [rnd[k] for k in keys]
    if any(a["crs"] != b["crs"] or a["labels"] != b["labels"] for a, b in zip(s, r, strict=True)):
        raise SystemExit("error: the runs' CRS-alone lists or labels differ: not the same turns and CRS")
    metrics = args.metrics.split(",")
    rows = {"CRS alone": (s, "crs")}
    rows |= {f"search, random reward ({p})": (r, f"search_{p}") for p in POOLS}
    rows |= {f"search, simulator reward ({p})": (s, f"search_{p}") for p in POOLS}
    vals = {name: {m: per_turn(recs, col, m) for m in metrics} for name, (recs, col) in rows.items()}
    n_labels = sum(len(x["labels"]) for x in s)
    out = [f"{len(keys)} turns, {n_labels} labels; mean over turns (per label, averaged within a turn)", "",
           "| method | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    out += [f"| {name} | " + " | ".join(f"{sum(v[m]) / len(v[m]):.4f}" for m in metrics) + " |"
            for name, v in vals.items()]
    out += ["", f"Differences, 95% paired bootstrap over turns ({args.resamples} resamples, seed {args.seed}):", "",
            "| difference | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    pairs = [(f"simulator ({p}) - CRS alone", f"search, simulator reward ({p})", "CRS alone") for p in POOLS]
    pairs += [(f"simulator ({p}) - random ({p})", f"search, simulator reward ({p})", f"search, random reward ({p})")
              for p in POOLS]
    pairs += [(f"random ({p}) - CRS alone", f"search, random reward ({p})", "CRS alone") for p in POOLS]
    for label, a, b in pairs:
        cells = []
        for m in metrics:
            d = [x - y for x, y in zip(vals[a][m], vals[b][m], strict=True)]
            lo, hi = bootstrap(d, args.resamples, args.seed)
            verdict = "" if lo <= 0 <= hi else " *"
            cells.append(f"{sum(d) / len(d):+.4f} [{lo:+.4f}, {hi:+.4f}]{verdict}")
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    out += ["", "`*`: the interval excludes 0 (separable); otherwise not separable."]
    text = "\n".join(out) + "\n"
    print(text, end="")
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
