"""Few-shot expert localisation, measured (issue 13 item 8).

The paper's claim: a few in-domain demonstrations already locate the domain's experts. Test on the
trained tiny MoE of `easyep.specialise` (same data, split and hyper-parameters as
experiments/easyep/specialise.yaml): score every text of the held-out math demonstration pool once,
on its own (scores are sums over tokens, so a subset's score matrix is the sum of its texts'
matrices); then, for each split seed, shuffle the pool, take two *disjoint* subsets of n texts
(n = 5, 10, 25), select the top-k experts per layer from each with EASY-EP, summed gate weight and
selection frequency, and report

  overlap(A, B) = mean over MoE layers of |top_k(A) & top_k(B)| / k

(1.0: the two subsets pick the same experts; chance for random sets of k of E: k / E). The
control ("math/other"): the overlap of A's set with the set chosen from n texts of each other
domain (QA, Office), averaged: experts that every text uses overlap there too, so localisation of
the *domain's* experts shows as math/math > math/other. Also kept (CSV): the overlap of each
subset's set with the set chosen from the whole pool.

    python -m rucai.easyep.localise --out experiments/easyep/results/fewshot_localisation

Writes: config.json, train_loss.csv, pool_scores.json (per-text score matrices are not kept; the
pool sums are), overlaps.csv (one row per model seed x split seed x n x method x k), summary.json,
results.md, metrics.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import random
import statistics
import time
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

METHODS = ("easyep", "gate", "frequency")


def topk_sets(score: torch.Tensor, k: int) -> list[set[int]]:
    """Per layer (rows of [L, E]): the top-k expert ids, ties to the lower id (as `topk_keep`)."""
    out = []
    for row in score:
        order = sorted(range(row.numel()), key=lambda i: (-float(row[i]), i))
        out.append(set(order[:k]))
    return out


def overlap(a: list[set[int]], b: list[set[int]], k: int) -> float:
    """Mean over layers of |a & b| / k."""
    return sum(len(x & y) for x, y in zip(a, b, strict=True)) / (k * len(a))


def per_text_scores(model: Any, tok: Any, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """{method: [N, L, E]} score matrices, one per text (each text scored on its own)."""
    from rucai.easyep.scoring import score_texts

    mats: dict[str, list[torch.Tensor]] = {m: [] for m in METHODS}
    for t in texts:
        s = score_texts(model, tok, [t], batch_size=1, max_length=max_length)
        for m in METHODS:
            mats[m].append(s.by_name(m))
    return {m: torch.stack(v) for m, v in mats.items()}


def subset_overlaps(mats: dict[str, torch.Tensor], sizes: list[int], split_seeds: list[int],
                    ks: list[int], others: dict[str, dict[str, torch.Tensor]] | None = None) -> list[dict[str, Any]]:
    """Rows {split_seed, n, method, k, pairwise, vs_pool_a, vs_pool_b[, cross]} for disjoint subsets A, B
    of the target pool; `others` ({domain: mats}): `cross` is the mean overlap of A's set with the set
    of n texts of each other domain (the control: do the demonstrations find the *domain's* experts,
    or experts every text uses?)."""
    others = others or {}
    n_pool = next(iter(mats.values())).shape[0]
    if 2 * max(sizes) > n_pool:
        raise ValueError(f"pool of {n_pool} texts cannot hold two disjoint subsets of {max(sizes)}")
    rows = []
    for s in split_seeds:
        order = list(range(n_pool))
        random.Random(s).shuffle(order)
        for n in sizes:
            a, b = order[:n], order[n:2 * n]
            for m in METHODS:
                full = mats[m].sum(0)
                sa, sb = mats[m][a].sum(0), mats[m][b].sum(0)
                for k in ks:
                    ta, tb, tp = topk_sets(sa, k), topk_sets(sb, k), topk_sets(full, k)
                    row = {"split_seed": s, "n": n, "method": m, "k": k, "pairwise": overlap(ta, tb, k),
                           "vs_pool_a": overlap(ta, tp, k), "vs_pool_b": overlap(tb, tp, k)}
                    if others:
                        cross = []
                        for om in others.values():
                            o_order = list(range(om[m].shape[0]))
                            random.Random(s).shuffle(o_order)
                            cross.append(overlap(ta, topk_sets(om[m][o_order[:n]].sum(0), k), k))
                        row["cross"] = statistics.fmean(cross)
                    rows.append(row)
    return rows


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per (k, n, method): each model seed's mean over split seeds, then mean +- std (population)
    over model seeds (`*_mean`, `*_std`); `*_std_splits`: std over all (model seed, split seed) rows."""
    def ms(vals: list[float]) -> tuple[float, float]:
        return statistics.fmean(vals), (statistics.pstdev(vals) if len(vals) > 1 else 0.0)

    out: dict[str, Any] = {}
    for k, n, m in sorted({(r["k"], r["n"], r["method"]) for r in rows}):
        sel = [r for r in rows if (r["k"], r["n"], r["method"]) == (k, n, m)]
        seeds = sorted({r["model_seed"] for r in sel})
        entry: dict[str, Any] = {"model_seeds": len(seeds), "split_seeds": len(sel) // len(seeds)}
        for col in ("pairwise", "cross", "vs_pool"):
            get = (lambda r: (r["vs_pool_a"] + r["vs_pool_b"]) / 2) if col == "vs_pool" else (lambda r, c=col: r.get(c))
            if any(get(r) is None for r in sel):
                continue
            per_seed = [statistics.fmean(get(r) for r in sel if r["model_seed"] == s) for s in seeds]
            entry[f"{col}_mean"], entry[f"{col}_std"] = ms(per_seed)
            entry[f"{col}_std_splits"] = ms([get(r) for r in sel])[1]
        if "cross_mean" in entry:
            margins = [statistics.fmean(r["pairwise"] - r["cross"] for r in sel if r["model_seed"] == s) for s in seeds]
            entry["margin_mean"], entry["margin_std"] = ms(margins)
        out[f"k{k}/n{n}/{m}"] = entry
    return out


def table(summary: dict[str, Any], k: int, sizes: list[int], experts: int) -> str:
    """Markdown: per subset size, math/math and math/other overlap and their margin, per method
    (mean +- std over model seeds)."""
    lines = [f"| demos per subset (k={k} of {experts}; chance {k / experts:.2f}) | "
             + " | ".join(f"{m} {c}" for c in ("math/math", "math/other", "margin") for m in METHODS) + " |",
             "|---" * (1 + 3 * len(METHODS)) + "|"]
    for n in sizes:
        cells = []
        for col in ("pairwise", "cross", "margin"):
            for m in METHODS:
                r = summary[f"k{k}/n{n}/{m}"]
                cells.append(f"{r[col + '_mean']:.3f} +- {r[col + '_std']:.3f}" if col + "_mean" in r else "n/a")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(data_dir: str, out: Path, work: Path, model_seeds: list[int], split_seeds: list[int], sizes: list[int],
        ks: list[int], family: str = "qwen3_moe", hidden: int = 64, layers: int = 3, experts: int = 16,
        top_k: int = 2, moe_inter: int = 64, steps: int = 300, batch_size: int = 16, seq_len: int = 128,
        lr: float = 3e-3, per_domain: int = 3000, n_pool: int = 100, n_eval: int = 96,
        demo_max_length: int = 1024, target: str = "math") -> dict[str, Any]:
    from rucai.easyep.toy import ByteTokenizer, load_domains, split_domain, tiny_model, train_mixture
    from rucai.runtime import load_causal_lm
    from rucai.utils.io import atomic_write_json, atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    all_rows: list[dict[str, Any]] = []
    train_log: list[dict[str, Any]] = []
    pool_json: dict[str, Any] = {}
    for ms in model_seeds:
        domains = load_domains(data_dir, per_domain=per_domain, seed=ms)
        splits = {k: split_domain(v, n_pool, n_eval) for k, v in domains.items()}
        mdir = work / f"model_seed{ms}"
        if (mdir / "config.json").is_file():  # resumable: reuse a model trained by an earlier run
            model = load_causal_lm(mdir, None, dtype="float32", device="cpu").eval()
            prev = json.loads((mdir / "train_loss.json").read_text())
        else:
            model = tiny_model(family, seed=ms, hidden=hidden, layers=layers, experts=experts, top_k=top_k,
                               moe_inter=moe_inter)
            prev = train_mixture(model, {k: s[0] for k, s in splits.items()}, steps, batch_size, seq_len, lr, ms) if steps else []
            model.save_pretrained(mdir)
            (mdir / "train_loss.json").write_text(json.dumps(prev))
        train_log += [{"model_seed": ms, "step": i + 1, "loss": x} for i, x in enumerate(prev)]
        pools = {d: per_text_scores(model, ByteTokenizer(), s[1], demo_max_length) for d, s in splits.items()}
        mats = pools.pop(target)
        pool_json[str(ms)] = {m: mats[m].sum(0).tolist() for m in METHODS}
        for r in subset_overlaps(mats, sizes, split_seeds, ks, others=pools):
            all_rows.append({"model_seed": ms} | r)
        log.info("model seed %d done (%.0f s)", ms, time.perf_counter() - t0)
    summary = summarise(all_rows)
    with open(out / "overlaps.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(all_rows[0]))
        w.writeheader()
        w.writerows(all_rows)
    with open(out / "train_loss.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["model_seed", "step", "loss"])
        w.writeheader()
        w.writerows(train_log)
    atomic_write_json(out / "pool_scores.json", pool_json)
    atomic_write_json(out / "summary.json", summary)
    md = "\n\n".join(table(summary, k, sizes, experts) for k in ks)
    atomic_write_text(out / "results.md", md + "\n")
    metrics = {f"{key}/pairwise": v["pairwise_mean"] for key, v in summary.items()} | {
        "seconds": time.perf_counter() - t0, "n_rows": len(all_rows)}
    atomic_write_json(out / "metrics.json", metrics)
    return summary


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="experiments/easyep/results/fewshot_localisation")
    ap.add_argument("--work", default="outputs/easyep/fewshot_localisation_work", help="trained models (not committed)")
    ap.add_argument("--data-dir", default=os.environ.get("RUCAI_DATA_DIR", "../shared/data"))
    ap.add_argument("--model-seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--split-seeds", type=int, nargs="+", default=list(range(10)))
    ap.add_argument("--sizes", type=int, nargs="+", default=[5, 10, 25])
    ap.add_argument("--ks", type=int, nargs="+", default=[8, 4])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    cfg = vars(a) | {"family": "qwen3_moe", "hidden": 64, "layers": 3, "experts": 16, "top_k": 2, "moe_inter": 64,
                     "batch_size": 16, "seq_len": 128, "lr": 3e-3, "per_domain": 3000, "n_pool": 100, "n_eval": 96,
                     "demo_max_length": 1024, "target": "math",
                     "command": "python -m rucai.easyep.localise " + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
                     "machine": f"{platform.machine()} {os.cpu_count()}-core CPU VM, no GPU", "torch": torch.__version__}
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    run(a.data_dir, out, Path(a.work), a.model_seeds, a.split_seeds, a.sizes, a.ks, steps=a.steps)
    print((out / "results.md").read_text())


if __name__ == "__main__":
    main()
