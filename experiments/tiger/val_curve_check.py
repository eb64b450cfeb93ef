"""Issue 14's metric check of the speed-ups: TIGER seed 0 on today's path (fp32, random batches,
torch dropout) against the fast path (bf16, length-grouped batches, fast dropout) seeds 0-2, epoch
by epoch on the validation curve (1,000 seeded validation users, the same for every run).

    python experiments/tiger/val_curve_check.py [SLOW_RUN_DIR] [--metric val/recall@10]

Prints a Markdown table of the common epochs and two summaries: the mean absolute difference between
the slow run and fast seed 0 (same seed: what the speed-ups change), and the mean absolute difference
between two fast seeds (seed noise). The slow path is "the same within noise" when the first is not
larger than the second.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
FAST = HERE / "results" / "office_cpu_comparison" / "tiger"
SLOW = HERE / "results" / "slow_path" / "seed0"


def curve(run: Path, metric: str) -> pd.Series:
    df = pd.read_csv(run / "eval" / "val.csv").drop_duplicates("epoch", keep="last").set_index("epoch")
    return df[metric]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("slow", nargs="?", default=str(SLOW))
    p.add_argument("--metric", default="val/recall@10")
    a = p.parse_args()
    fast = {s: curve(FAST / f"seed{s}", a.metric) for s in (0, 1, 2)}
    df = pd.DataFrame({**{f"fast seed {s}": v for s, v in fast.items()}, "slow seed 0": curve(Path(a.slow), a.metric)})
    df = df.dropna()
    print(f"{a.metric}, epochs {df.index.min()}-{df.index.max()} ({len(df)} epochs)\n")
    print(df.round(4).to_markdown())
    same_seed = (df["slow seed 0"] - df["fast seed 0"]).abs().mean()
    pairs = [(df[f"fast seed {i}"] - df[f"fast seed {j}"]).abs().mean() for i, j in itertools.combinations(range(3), 2)]
    print(f"\nmean |slow seed 0 - fast seed 0| = {same_seed:.4f}")
    print(f"mean |fast seed i - fast seed j| = {sum(pairs) / len(pairs):.4f} (pairs: {', '.join(f'{x:.4f}' for x in pairs)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
