"""SASRec side by side: RecBole 1.2.1 vs rucai on the same split and hyperparameters.

    python -m rucai.bench.recbole_sasrec --data-dir ../shared/data/amazon18_office \
        --hidden 64 128 --seeds 0 1 2 --epochs 300

Both train on the same data (LC-Rec Office exported to RecBole atomic files, timestamps = the
sequence order), leave-one-out, max history 20, CE loss over all items, Adam lr 1e-3, batch 2048,
dropout 0.5/0.5, inner size 256, full ranking over all items with the history *not* masked (RecBole
1.2.1's full sort masks seen items only for general models: for sequential models
`FullSortEvalDataLoader.collate_fn` returns no history index; rucai `model.mask_history=false`),
early stopping on valid NDCG@10 with patience 10.
Prints seconds per training epoch for each and the ratio, and test Recall@10/NDCG@10.

RecBole lives in its own environment (its pins are old): `bash scripts/recbole-env.sh` builds
`.venv-recbole/` (torch==2.13.0 + recbole==1.2.1); `--recbole-python` points elsewhere.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from rucai.utils.io import atomic_write_json

ROOT = Path(__file__).resolve().parents[2]

RECBOLE_SCRIPT = r"""
import json, sys, logging
from recbole.quick_start import run_recbole
cfg = json.loads(sys.argv[1])
res = run_recbole(model="SASRec", dataset=cfg.pop("dataset"), config_dict=cfg, saved=False)
print("RUCAI_RESULT " + json.dumps({k: (dict(v) if hasattr(v, "items") else v) for k, v in res.items()}))
"""


def export_atomic(data_dir: Path, name: str, out: Path) -> Path:
    """LC-Rec `<name>.inter.json` -> RecBole `<out>/office/office.inter` (order kept via timestamps)."""
    raw = json.loads((data_dir / f"{name}.inter.json").read_text())
    d = out / "office"
    d.mkdir(parents=True, exist_ok=True)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for u, items in raw.items():
        lines += [f"{u}\t{i}\t{t}" for t, i in enumerate(items)]
    (d / "office.inter").write_text("\n".join(lines) + "\n")
    return out


def run_recbole(python: str, data_path: Path, hidden: int, seed: int, epochs: int, batch: int) -> dict:
    cfg = {
        "dataset": "office", "data_path": str(data_path), "seed": seed, "reproducibility": True,
        "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "MAX_ITEM_LIST_LENGTH": 20, "hidden_size": hidden, "inner_size": 256, "n_layers": 2, "n_heads": 2,
        "hidden_dropout_prob": 0.5, "attn_dropout_prob": 0.5, "loss_type": "CE", "train_neg_sample_args": None,
        "train_batch_size": batch, "eval_batch_size": 4096, "learning_rate": 1e-3, "epochs": epochs,
        "stopping_step": 10, "valid_metric": "NDCG@10", "metrics": ["Recall", "NDCG"], "topk": [10],
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
        "device": "cpu", "use_gpu": False, "show_progress": False, "checkpoint_dir": str(data_path / "ckpt"),
        "log_wandb": False, "worker": 0,
    }
    p = subprocess.run([python, "-c", RECBOLE_SCRIPT, json.dumps(cfg)], capture_output=True, text=True,
                       cwd=data_path)
    out = p.stdout + p.stderr
    m = re.search(r"RUCAI_RESULT (.*)", out)
    if p.returncode != 0 or not m:
        raise RuntimeError(f"RecBole failed (rc={p.returncode}): {out[-2000:]}")
    res = json.loads(m.group(1))
    times = [float(t) for t in re.findall(r"training \[time: ([0-9.]+)s", out)]
    test = res["test_result"]
    return {"sec_per_epoch": statistics.mean(times), "epochs": len(times),
            "recall@10": float(test["recall@10"]), "ndcg@10": float(test["ndcg@10"])}


def run_rucai(data_dir: Path, hidden: int, seed: int, epochs: int, batch: int, out: Path,
              train_mode: str = "all_positions") -> dict:
    run_dir = out / f"rucai_h{hidden}_s{seed}_{train_mode}"
    # all_positions: the same training pairs packed in windows, ~`batch` targets per batch on average
    batching = ([f"data.train_batch_targets={batch}"] if train_mode == "all_positions"
                else [f"data.batch_size={batch}"])
    cmd = [sys.executable, str(ROOT / "run.py"), "experiment=sasrec/office",
           f"data.dir={data_dir}", f"data.train_mode={train_mode}", *batching, "data.eval_batch_size=4096",
           f"model.hidden_size={hidden}", "model.inner_size=256", "model.mask_history=false",
           f"trainer.max_epochs={epochs}", "trainer.enable_progress_bar=false", f"seed={seed}",
           "logger=none", f"hydra.run.dir={run_dir}"]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if p.returncode != 0:
        raise RuntimeError(f"rucai failed: {p.stderr[-2000:]}")
    m = json.loads((run_dir / "metrics.json").read_text())
    return {"sec_per_epoch": m["sec_per_epoch"], "epochs": m["epochs_trained"],
            "recall@10": m["test/recall@10"], "ndcg@10": m["test/ndcg@10"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rucai.bench.recbole_sasrec", description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "amazon18_office")
    ap.add_argument("--name", default="Office_Products")
    ap.add_argument("--hidden", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--train-mode", nargs="+", default=["all_positions"], choices=["all_positions", "prefix"],
                    help="rucai's training layout(s) to run beside RecBole (prefix = RecBole's own layout)")
    ap.add_argument("--recbole-python", default=str(ROOT / ".venv-recbole" / "bin" / "python"))
    ap.add_argument("--sides", nargs="+", default=["recbole", "rucai"], choices=["recbole", "rucai"],
                    help="run only one side (e.g. more RecBole seeds beside rucai seeds already run)")
    ap.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = ap.parse_args(argv)
    if "recbole" in args.sides and not Path(args.recbole_python).exists():
        print(f"error: no RecBole environment at {args.recbole_python}: run `bash scripts/recbole-env.sh` "
              f"or pass --recbole-python", file=sys.stderr)
        return 2
    if not (args.data_dir / f"{args.name}.inter.json").is_file():
        print(f"error: {args.data_dir / (args.name + '.inter.json')} not found (--data-dir)", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="rucai-recbole-") as tmp:
        atomic = export_atomic(args.data_dir, args.name, Path(tmp))
        for h in args.hidden:
            for s in args.seeds:
                rb = None
                if "recbole" in args.sides:
                    rb = run_recbole(args.recbole_python, atomic, h, s, args.epochs, args.batch_size)
                    print(f"h={h} seed={s}: recbole {rb}", flush=True)
                for mode in args.train_mode:
                    ours = None
                    if "rucai" in args.sides:
                        ours = run_rucai(args.data_dir, h, s, args.epochs, args.batch_size, Path(tmp), mode)
                        print(f"h={h} seed={s}: rucai[{mode}] {ours}", flush=True)
                    rows.append({"hidden": h, "seed": s, "train_mode": mode, "recbole": rb, "rucai": ours})
                if args.out:  # keep what is done so far
                    atomic_write_json(args.out, rows)
    print(format_table(rows))
    return 0


def format_table(rows: list[dict]) -> str:
    """Per-run rows, then mean +- std over seeds per (hidden, train_mode); a side not run is "-"."""

    def f(side: dict | None, key: str, fmt: str = ".4f") -> str:
        return "-" if side is None else format(side[key], fmt)

    def ratio(rb: dict | None, us: dict | None) -> float | None:
        return None if rb is None or us is None else rb["sec_per_epoch"] / us["sec_per_epoch"]

    lines = ["| hidden | seed | rucai layout | RecBole s/epoch | rucai s/epoch | speed-up | RecBole R@10 | rucai R@10 "
             "| RecBole N@10 | rucai N@10 | epochs (RecBole/rucai) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        rb, us = r["recbole"], r["rucai"]
        sp = ratio(rb, us)
        lines.append(
            f"| {r['hidden']} | {r['seed']} | {r['train_mode']} | {f(rb, 'sec_per_epoch', '.2f')} "
            f"| {f(us, 'sec_per_epoch', '.2f')} | {'-' if sp is None else f'{sp:.2f}x'} | {f(rb, 'recall@10')} "
            f"| {f(us, 'recall@10')} | {f(rb, 'ndcg@10')} | {f(us, 'ndcg@10')} "
            f"| {f(rb, 'epochs', 'd')}/{f(us, 'epochs', 'd')} |")

    def ms(sides: list[dict | None], key: str) -> str:
        xs = [x[key] for x in sides if x is not None]
        if not xs:
            return "-"
        return f"{statistics.mean(xs):.4f} ± {statistics.stdev(xs) if len(xs) > 1 else 0.0:.4f} (n={len(xs)})"

    lines += ["", "| hidden | rucai layout | speed-up (mean) | RecBole R@10 | rucai R@10 | RecBole N@10 "
              "| rucai N@10 |", "|---|---|---|---|---|---|---|"]
    for key in sorted({(r["hidden"], r["train_mode"]) for r in rows}):
        g = [r for r in rows if (r["hidden"], r["train_mode"]) == key]
        speeds = [x for x in (ratio(r["recbole"], r["rucai"]) for r in g) if x is not None]
        rb, us = [r["recbole"] for r in g], [r["rucai"] for r in g]
        lines.append(
            f"| {key[0]} | {key[1]} | {f'{statistics.mean(speeds):.2f}x' if speeds else '-'} | {ms(rb, 'recall@10')} "
            f"| {ms(us, 'recall@10')} | {ms(rb, 'ndcg@10')} | {ms(us, 'ndcg@10')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
