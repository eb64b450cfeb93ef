"""Collect runs into tables: `python -m rucai.results DIR [DIR ...] [--out DIR] [--metrics a,b]`.

Walks each DIR (a run directory, a multirun sweep, or any folder above them) for run directories,
those holding `metrics.json` (the dispatcher writes one for every run, failed ones included) or
`.hydra/overrides.yaml`. Each run's command-line overrides become columns, its metrics.json values
too. Writes into `--out` (default: the first DIR):

  results.csv / results.md              one row per run; failed runs stay, with status and error
  results_seeds.csv / results_seeds.md  runs that differ only in `seed` (same experiment, same
                                        other overrides) as one row: mean, sample std (ddof=1) and
                                        n per metric, over completed runs only
  results.png                           the first metric against each swept override (mean +- std)

    python run.py -m experiment=sasrec/office seed=0,1,2
    python -m rucai.results outputs/sasrec/office/multirun/<time>
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from rucai.utils.io import atomic_write_text

_SKIP_OVERRIDE_KEYS = ("hydra.", "paths.log_dir")
# metrics.json fields that are bookkeeping, not results
_RECORD_KEYS = {"run", "experiment", "task", "status", "error", "seed", "seconds", "start_time", "end_time",
                "failed_at", "git_commit", "host", "job_id", "slurm_state", "test_ckpt", "resumed_from",
                "start_epoch", "epochs_trained", "best_epoch"}
_HIDE_IN_PRINT = ("experiment", "task", "test_ckpt", "resumed_from")


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


def _run_dirs(root: Path) -> set[Path]:
    found = {p.parent for p in root.rglob("metrics.json")}
    found |= {p.parent.parent for p in root.rglob(".hydra/overrides.yaml")}
    found = {d for d in found if ".submitit" not in d.parts}
    # a run's own sub-processes (a DDP pipeline's per-stage records) are part of that run, not runs
    return {d for d in found if not any(a in found for a in d.parents)}


def _natural(path: str) -> list:
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in Path(path).parts]


def collect(*roots: str | Path) -> Any:
    """Return a pandas DataFrame with one row per run under `roots`.

    Columns: `run` (the run's folder, relative to the root, or to the roots' common folder when there
    are several), `override_keys`-style columns (`model.lr`, `seed`, ...) from `.hydra/overrides.yaml`,
    then every scalar of `metrics.json` (status, error, metrics).
    """
    import os

    import pandas as pd

    paths = [Path(r) for r in roots]
    if not paths:
        raise FileNotFoundError("no directory given")
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist")
    runs = sorted(set().union(*(_run_dirs(p) for p in paths)))
    base = paths[0] if len(paths) == 1 else Path(os.path.commonpath([p.resolve() for p in paths]))
    rows: list[dict[str, Any]] = []
    override_keys: dict[str, None] = {}
    for run in runs:
        try:
            label = (run.resolve() if len(paths) > 1 else run).relative_to(base)
        except ValueError:
            label = run
        row: dict[str, Any] = {"run": str(label) if str(label) else "."}
        ovs = _overrides(run)
        override_keys |= dict.fromkeys(ovs)
        row |= ovs
        mfile = run / "metrics.json"
        metrics: dict[str, Any] = {}
        if mfile.is_file():
            try:
                metrics = json.loads(mfile.read_text())
            except json.JSONDecodeError as e:
                metrics = {"status": "unreadable metrics.json", "error": str(e)}
            row |= {k: v for k, v in metrics.items() if isinstance(v, int | float | str | bool) or v is None}
        else:
            row["status"] = "no metrics (running, killed or failed before writing)"
        if not isinstance(metrics.get("seed"), int) and "seed" in ovs:
            row["seed"] = int(ovs["seed"]) if ovs["seed"].lstrip("-").isdigit() else ovs["seed"]
        rows.append(row)
    df = pd.DataFrame(rows)
    if "run" in df and len(df):
        df = df.sort_values("run", key=lambda s: s.map(_natural))
    df = df.reset_index(drop=True)
    df.attrs["overrides"] = list(override_keys)
    return df


def metric_columns(df, metrics: list[str] | None = None) -> list[str]:
    """The result columns: `metrics` if given, else every numeric column named like `test/ndcg@10`."""
    import pandas as pd

    if metrics:
        return [m for m in metrics if m in df.columns]
    cols = [c for c in df.columns if "/" in c and c not in _RECORD_KEYS
            and pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])]
    return sorted(cols, key=lambda c: (not c.startswith("test/"), not c.startswith("val/"), c))


def _keep(df, metrics: list[str] | None):
    if not metrics:
        return df
    chosen = set(metrics)
    return df[[c for c in df.columns if c in chosen or c not in metric_columns(df)]]


def _override_columns(df) -> list[str]:
    """Columns that came from command-line overrides (`experiment`, `model.lr`, `seed`, `debug`...);
    for a table without `collect`'s note of them, the dotted columns and seed/experiment."""
    keys = df.attrs.get("overrides")
    if keys is None:
        keys = [c for c in df.columns if "/" not in c and ("." in c or c in ("seed", "experiment"))]
    return list(dict.fromkeys(["experiment", *keys])) if "experiment" in df.columns else list(keys)


def seeds_table(df, metrics: list[str] | None = None) -> Any:
    """One row per group of runs that differ only in `seed`: mean, std (ddof=1) and n per metric.

    The group key is the experiment plus every other override (missing ones count as unset); only
    completed runs enter the statistics; `runs` and `failed` count all of the group's runs.
    """
    import pandas as pd

    mcols = metric_columns(df, metrics)
    keys = [c for c in _override_columns(df) if c != "seed" and c in df.columns]
    key_df = df[keys].astype(object).where(df[keys].notna(), "") if keys else pd.DataFrame(index=df.index)
    group_ids = key_df.astype(str).agg("\x1f".join, axis=1) if keys else pd.Series("", index=df.index)
    done = df["status"].eq("completed") if "status" in df else pd.Series(True, index=df.index)
    # only the keys that tell groups apart (plus the experiment) are shown
    shown = [k for k in keys if k == "experiment" or key_df[k].astype(str).nunique() > 1]
    rows = []
    for gid in dict.fromkeys(group_ids):
        members = df[group_ids == gid]
        ok = members[done[group_ids == gid]]
        first = key_df.loc[members.index[0]]
        row: dict[str, Any] = {k: first[k] for k in shown}
        seeds = [str(int(s)) if isinstance(s, float) and s.is_integer() else str(s)
                 for s in ok["seed"].dropna().tolist()] if "seed" in ok else []
        row |= {"seeds": ",".join(seeds), "runs": len(members), "failed": len(members) - len(ok)}
        for m in mcols:
            vals = pd.to_numeric(ok[m], errors="coerce").dropna() if m in ok else pd.Series(dtype=float)
            row[f"{m} mean"] = vals.mean() if len(vals) else math.nan
            row[f"{m} std"] = vals.std(ddof=1) if len(vals) > 1 else math.nan
            row[f"{m} n"] = int(len(vals))
        rows.append(row)
    return pd.DataFrame(rows)


def _markdown(df) -> str:
    """A markdown table that shows values as written (`1e-3` stays `1e-3`, job ids stay strings):
    floats with 4 decimals, missing cells blank."""
    import pandas as pd

    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
            return ""
        if isinstance(v, float):
            return f"{v:.4f}"
        return str(v)

    cells = df.map(cell) if hasattr(df, "map") else df.applymap(cell)  # pandas < 2.1: applymap
    return cells.to_markdown(index=False, disable_numparse=True) + "\n"


def _seeds_markdown(table, metrics: list[str]) -> str:
    """`mean ± std` cells, `n` beside each metric."""
    import pandas as pd

    out = table[[c for c in table.columns if not c.endswith((" mean", " std", " n"))]].copy()
    for m in metrics:
        mean, std, n = table[f"{m} mean"], table[f"{m} std"], table[f"{m} n"]
        out[m] = [("" if pd.isna(a) else f"{a:.4f}" + ("" if pd.isna(s) else f" ± {s:.4f}"))
                  for a, s in zip(mean, std, strict=True)]
        out[f"{m} n"] = n
    return _markdown(out)


def write(df, root: str | Path, metrics: list[str] | None = None) -> tuple[Path, Path]:
    """Write the per-run tables `results.csv` and `results.md` into `root`."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    df = _keep(df, metrics)
    csv_path = atomic_write_text(root / "results.csv", df.to_csv(index=False))
    md_path = atomic_write_text(root / "results.md", _markdown(df))
    return csv_path, md_path


def write_seeds(df, root: str | Path, metrics: list[str] | None = None) -> tuple[Path, Path, Any]:
    """Write `results_seeds.csv` / `results_seeds.md` into `root`; return them and the table."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    table = seeds_table(df, metrics)
    csv_path = atomic_write_text(root / "results_seeds.csv", table.to_csv(index=False))
    md_path = atomic_write_text(root / "results_seeds.md", _seeds_markdown(table, metric_columns(df, metrics)))
    return csv_path, md_path, table


def swept_columns(df) -> list[str]:
    """Override columns whose value differs between runs."""
    skip = {"run", "task", "status", "error", "test_ckpt", "resumed_from"}
    cols = [c for c in df.columns
            if c not in skip and "/" not in c and ("." in c or c in ("seed", "experiment"))]
    return [c for c in cols if c in df and df[c].nunique(dropna=True) > 1]


def plot(df, root: str | Path, metric: str | None = None) -> Path | None:
    """Plot `metric` against each swept value (one panel per swept override, the spread over the
    other values, seeds among them, as error bars; completed runs only) -> results.png."""
    if "status" in df:
        df = df[df["status"].eq("completed")]
    metrics = metric_columns(df)
    metric = metric or next((m for m in ("test/ndcg@10", "val/ndcg@10") if m in metrics), None) or (
        metrics[0] if metrics else None)
    swept = swept_columns(df)
    if len(swept) > 1:  # seeds are the error bars, not a panel
        swept = [c for c in swept if c != "seed"]
    if metric is None or metric not in df or not swept:
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
            if len(agg) and (agg["x"] > 0).all() and agg["x"].max() / agg["x"].min() >= 10:
                ax.set_xscale("log")
        else:
            agg = sub.groupby(col)[metric].agg(["mean", "std"])
            ax.bar([str(v) for v in agg.index], agg["mean"].values, yerr=agg["std"].fillna(0).values, capsize=3)
            ax.tick_params(axis="x", rotation=30)
        ax.set_xlabel(col)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{metric} over {len(df)} runs")
    fig.tight_layout()
    from rucai.utils.io import save_figure

    return save_figure(fig, Path(root) / "results.png")


def _split_metrics(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [m.strip() for v in values for m in v.split(",") if m.strip()] or None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rucai.results", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[2:]))
    ap.add_argument("dirs", nargs="+", metavar="DIR",
                    help="run directories, multirun sweep directories or any folders above them")
    ap.add_argument("--out", help="where to write the tables and the plot (default: the first DIR)")
    ap.add_argument("--metrics", nargs="+",
                    help="only these metric columns, comma- or space-separated (test/recall@10,test/ndcg@10)")
    ap.add_argument("--ignore", nargs="+", default=[], metavar="KEY",
                    help="overrides that do not tell runs apart (e.g. trainer.max_time when no run hit the cap): "
                         "dropped before grouping seeds")
    args = ap.parse_args(argv)
    metrics = _split_metrics(args.metrics)
    try:
        df = collect(*args.dirs)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if df.empty:
        print(f"error: no runs (metrics.json or .hydra/overrides.yaml) under {' '.join(args.dirs)}",
              file=sys.stderr)
        return 2
    ignore = _split_metrics(args.ignore) or []
    if missing := [k for k in ignore if k not in df.columns]:
        print(f"error: --ignore {', '.join(missing)}: no run has that override", file=sys.stderr)
        return 2
    df = df.drop(columns=ignore)
    if metrics:
        unknown = [m for m in metrics if m not in df.columns]
        if unknown:
            have = ", ".join(metric_columns(df)) or "none"
            print(f"error: no runs have --metrics {', '.join(unknown)}; metrics found: {have}", file=sys.stderr)
            return 2
    out = Path(args.out or args.dirs[0])
    csv_path, md_path = write(df, out, metrics)
    s_csv, s_md, seeds = write_seeds(df, out, metrics)
    png = plot(df, out, (metrics or [None])[0])
    shown = _keep(df, metrics)
    print(_markdown(shown[[c for c in shown.columns if c not in _HIDE_IN_PRINT]]).rstrip())
    print("\nover seeds (mean ± sample std, completed runs):")
    print(s_md.read_text().rstrip())
    print(f"\nwrote {csv_path}, {md_path}, {s_csv}, {s_md}" + (f" and {png}" if png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
