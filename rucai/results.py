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
    cols = [c for c in df.columns if c not in ("experiment", "task", "test_ckpt", "resumed_from")]
    if args.metrics:
        cols = [c for c in cols if not c.startswith(("val/", "test/", "train/")) or c in args.metrics]
    print(df[cols].to_markdown(index=False, floatfmt=".4f"))
    print(f"\nwrote {csv_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
