"""Collect runs into one table: `python -m rucai.results <dir> [--metrics test/ndcg@10 ...]`.

Walks `<dir>` for run directories (those holding `metrics.json`), takes each run's command-line
overrides from `.hydra/overrides.yaml` as columns and its metrics as columns, and writes
`results.csv` and `results.md` into `<dir>`. Works for a single run, a multirun sweep or a tree of
sweeps. Failed runs stay in the table with their status and error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rucai.utils.io import atomic_write_text

_SKIP_OVERRIDE_KEYS = ("hydra.", "paths.log_dir")


def _overrides(run_dir: Path) -> dict[str, str]:
    import yaml

    f = run_dir / ".hydra" / "overrides.yaml"
    if not f.is_file():
        return {}
    out = {}
    for ov in yaml.safe_load(f.read_text()) or []:
        if "=" not in ov:
            continue
        k, v = ov.split("=", 1)
        k = k.lstrip("+~")
        if not k.startswith(_SKIP_OVERRIDE_KEYS):
            out[k] = v
    return out


def collect(root: str | Path) -> Any:
    """Return a pandas DataFrame with one row per run under `root`."""
    import pandas as pd

    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root} does not exist")
    rows: list[dict[str, Any]] = []
    run_dirs = sorted({p.parent for p in root.rglob("metrics.json")} | {p.parent.parent for p in root.rglob(".hydra/overrides.yaml")})
    for run in run_dirs:
        row: dict[str, Any] = {"run": str(run.relative_to(root)) if run != root else "."}
        row |= _overrides(run)
        mfile = run / "metrics.json"
        if mfile.is_file():
            metrics = json.loads(mfile.read_text())
            row |= {k: v for k, v in metrics.items() if isinstance(v, int | float | str | bool) or v is None}
        else:
            row["status"] = "no metrics (running, killed or failed before writing)"
        rows.append(row)
    df = pd.DataFrame(rows)
    if "run" in df and len(df):
        df = df.sort_values("run", key=lambda s: s.map(lambda x: [int(t) if t.isdigit() else t for t in Path(x).parts]))
    return df.reset_index(drop=True)


def write(df, root: str | Path, metrics: list[str] | None = None) -> tuple[Path, Path]:
    root = Path(root)
    if metrics:
        keep = [c for c in df.columns if not c.startswith(("val/", "test/", "train/")) or c in metrics]
        df = df[keep]
    csv_path = atomic_write_text(root / "results.csv", df.to_csv(index=False))
    md_path = atomic_write_text(root / "results.md", df.to_markdown(index=False, floatfmt=".4f") + "\n")
    return csv_path, md_path


def swept_columns(df) -> list[str]:
    """Override columns whose value differs between runs."""
    skip = {"run", "experiment", "task", "status", "error", "test_ckpt", "resumed_from"}
    metric_like = ("val/", "test/", "train/")
    cols = [c for c in df.columns
            if c not in skip and not c.startswith(metric_like) and ("." in c or c in ("seed", "experiment"))]
    return [c for c in cols if c in df and df[c].nunique(dropna=True) > 1]


def plot(df, root: str | Path, metric: str | None = None) -> Path | None:
    """Plot `metric` against each swept value (one panel per swept override) -> results.png."""
    metrics = [c for c in df.columns if c.startswith(("test/", "val/"))]
    metric = metric or next((m for m in ("test/ndcg@10", "val/ndcg@10") if m in metrics), None) or (
        metrics[0] if metrics else None)
    swept = swept_columns(df)
    if metric is None or not swept:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    fig, axes = plt.subplots(1, len(swept), figsize=(4.2 * len(swept), 3.4), squeeze=False)
    for ax, col in zip(axes[0], swept, strict=True):
        sub = df[[col, metric]].dropna(subset=[metric])
        x = pd.to_numeric(sub[col], errors="coerce")
        if x.notna().all():
            agg = sub.assign(x=x).groupby("x")[metric].agg(["mean", "std", "count"]).reset_index()
            ax.errorbar(agg["x"], agg["mean"], yerr=agg["std"].fillna(0), marker="o", capsize=3)
            if (agg["x"] > 0).all() and agg["x"].max() / agg["x"].min() >= 10:
                ax.set_xscale("log")
        else:
            agg = sub.groupby(col)[metric].mean()
            ax.bar([str(v) for v in agg.index], agg.values)
            ax.tick_params(axis="x", rotation=30)
        ax.set_xlabel(col)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{metric} over {len(df)} runs")
    fig.tight_layout()
    out = Path(root) / "results.png"
    tmp = out.with_name(".results.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rucai.results", description=__doc__.splitlines()[0])
    ap.add_argument("dir", help="a run directory, a multirun sweep directory or any folder above them")
    ap.add_argument("--metrics", nargs="*", help="only these metric columns (e.g. test/ndcg@10)")
    args = ap.parse_args(argv)
    try:
        df = collect(args.dir)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if df.empty:
        print(f"error: no runs (metrics.json or .hydra/overrides.yaml) under {args.dir}", file=sys.stderr)
        return 2
    csv_path, md_path = write(df, args.dir, args.metrics)
    png = plot(df, args.dir, (args.metrics or [None])[0])
    cols = [c for c in df.columns if c not in ("experiment", "task", "test_ckpt", "resumed_from")]
    if args.metrics:
        cols = [c for c in cols if not c.startswith(("val/", "test/", "train/")) or c in args.metrics]
    print(df[cols].to_markdown(index=False, floatfmt=".4f"))
    print(f"\nwrote {csv_path}, {md_path}" + (f" and {png}" if png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
