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
import functools, json, sys, logging
import torch
# RecBole 1.2.1 reloads the best checkpoint it just saved (config and RNG state pickled in it) with a
# bare torch.load; torch >= 2.6 defaults to weights_only=True, which refuses that file
torch.load = functools.partial(torch.load, weights_only=False)
from recbole.quick_start import run_recbole
cfg = json.loads(sys.argv[1])
# saved=True: RecBole tests the best-validation checkpoint only when it saved one (with saved=False
# `trainer.evaluate(test_data, load_best_model=saved)` tests the last epoch's weights)
res = run_recbole(model="SASRec", dataset=cfg.pop("dataset"), config_dict=cfg, saved=True)
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


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def parse_recbole_log(text: str) -> list[dict]:
    """Per-epoch rows from a RecBole 1.2.1 log: epoch, train seconds and loss, valid Recall@10/NDCG@10."""
    text = ANSI.sub("", text)
    rows: dict[int, dict] = {}
    for m in re.finditer(r"epoch (\d+) training \[time: ([0-9.]+)s, train loss: ([0-9.eE+-]+)\]", text):
        rows.setdefault(int(m.group(1)), {}).update(
            {"epoch": int(m.group(1)), "train_sec": float(m.group(2)), "train_loss": float(m.group(3))})
    for m in re.finditer(r"epoch (\d+) evaluating \[time: [0-9.]+s, valid_score: [0-9.]+\]\s*\n.*?valid "
                         r"result:\s*\n\s*recall@10 : ([0-9.]+)\s+ndcg@10 : ([0-9.]+)", text):
        rows.setdefault(int(m.group(1)), {"epoch": int(m.group(1))}).update(
            {"val/recall@10": float(m.group(2)), "val/ndcg@10": float(m.group(3))})
    return [rows[k] for k in sorted(rows)]


def write_epochs_csv(rows: list[dict], path: Path) -> None:
    import csv
    import io

    from rucai.utils.io import atomic_writer

    cols = ["epoch", "train_sec", "train_loss", "val/recall@10", "val/ndcg@10"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, restval="")
    w.writeheader()
    w.writerows(rows)
    with atomic_writer(path) as f:
        f.write(buf.getvalue())


def recbole_record(log: str, hidden: int, seed: int) -> dict:
    """A rucai-style metrics.json from a finished RecBole log: test (best-validation checkpoint),
    best validation, best epoch, epochs run and mean training seconds per epoch."""
    log = ANSI.sub("", log)

    def result(label: str) -> dict[str, float]:
        m = re.search(label + r"\s*: OrderedDict\(\[(.*?)\]\)", log)
        return {k: float(v) for k, v in re.findall(r"\('([a-z]+@\d+)', ([0-9.eE+-]+)\)", m.group(1))} if m else {}

    test, valid, rows = result("test result"), result("best valid"), parse_recbole_log(log)
    best = re.search(r"best eval result in epoch (\d+)", log)
    best_epoch = int(best.group(1)) if best else _best_epoch(rows)
    if not valid and best_epoch is not None:  # a run cut short before its summary: the CSV row
        valid = {k[4:]: v for r in rows if r["epoch"] == best_epoch for k, v in r.items() if k.startswith("val/")}
    secs = [r["train_sec"] for r in rows if "train_sec" in r]
    return {"status": "completed" if test else "no test result in the log", "seed": seed,
            "model": "RecBole 1.2.1 SASRec", "hidden": hidden,
            **{f"test/{k}": v for k, v in test.items()}, **{f"val/{k}": v for k, v in valid.items()},
            "best_epoch": best_epoch, "epochs_trained": len(secs),
            "sec_per_epoch": round(statistics.mean(secs), 3) if secs else None}


def _best_epoch(rows: list[dict]) -> int | None:
    """RecBole's best epoch when it did not stop early: the last epoch with the top valid NDCG@10
    (its `early_stopping` counts a tie as an improvement)."""
    scored = [r for r in rows if "val/ndcg@10" in r]
    if not scored:
        return None
    top = max(r["val/ndcg@10"] for r in scored)
    return max(r["epoch"] for r in scored if r["val/ndcg@10"] == top)


def write_recbole_run(run_dir: Path, log: str, hidden: int, seed: int) -> Path:
    """`run_dir`/{recbole_log.txt, eval/val.csv, metrics.json}: a run folder `python -m rucai.results` reads."""
    from rucai.utils.io import atomic_write_text

    log = ANSI.sub("", log)
    atomic_write_text(run_dir / "recbole_log.txt", log)  # .txt: results_archive keeps it
    write_epochs_csv(parse_recbole_log(log), run_dir / "eval" / "val.csv")
    atomic_write_json(run_dir / "metrics.json", recbole_record(log, hidden, seed))
    return run_dir


def records_from(log_dir: Path) -> list[Path]:
    """Turn every `recbole_h<H>_s<S>.log` in `log_dir` into the run folder `log_dir/recbole_h<H>_s<S>/`."""
    out = []
    for f in sorted(log_dir.glob("recbole_h*_s*.log")):
        m = re.fullmatch(r"recbole_h(\d+)_s(\d+)\.log", f.name)
        if m:
            out.append(write_recbole_run(log_dir / f.stem, f.read_text(), int(m.group(1)), int(m.group(2))))
    return out


def run_recbole(python: str, data_path: Path, hidden: int, seed: int, epochs: int, batch: int,
                log_dir: Path | None = None) -> dict:
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
    out = ANSI.sub("", p.stdout + p.stderr)
    if log_dir is not None:  # the raw log and its per-epoch validation, beside the JSON rows
        log_dir.mkdir(parents=True, exist_ok=True)
        from rucai.utils.io import atomic_writer

        with atomic_writer(log_dir / f"recbole_h{hidden}_s{seed}.log") as f:
            f.write(out)
        write_epochs_csv(parse_recbole_log(out), log_dir / f"recbole_h{hidden}_s{seed}_epochs.csv")
        if p.returncode == 0:
            write_recbole_run(log_dir / f"recbole_h{hidden}_s{seed}", out, hidden, seed)
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
    ap.add_argument("--log-dir", type=Path, default=None,
                    help="keep each RecBole run's log, per-epoch validation CSV and run folder here")
    ap.add_argument("--records-from", type=Path, default=None, metavar="LOG_DIR",
                    help="only turn the recbole_h*_s*.log files of a --log-dir into run folders "
                         "(metrics.json, eval/val.csv) for `python -m rucai.results`, then exit")
    args = ap.parse_args(argv)
    if args.records_from is not None:
        made = records_from(args.records_from)
        print("\n".join(map(str, made)) or f"no recbole_h*_s*.log under {args.records_from}")
        return 0 if made else 2
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
                    rb = run_recbole(args.recbole_python, atomic, h, s, args.epochs, args.batch_size, args.log_dir)
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
