"""Markdown tables for the MTGRec README from a folder of runs (`<root>/runs/<variant>/seed<N>/`).

    python -m rucai.mtgrec.report outputs/mtgrec
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

METRICS = ("test/recall@5", "test/recall@10", "test/ndcg@5", "test/ndcg@10")
ORDER = ("office_single_tokenizer", "office_no_pretrain", "office_no_curriculum", "office_random_tokenizers", "office")
NAMES = {
    "office": "MTGRec",
    "office_single_tokenizer": "TIGER (single tokenizer, same pre-train + fine-tune schedule)",
    "office_no_pretrain": "no pre-training (fine-tune stage alone)",
    "office_no_curriculum": "no curriculum (uniform sampling)",
    "office_random_tokenizers": "tokenizers from unrelated random inits",
}


def _fmt(xs: list[float]) -> str:
    if not xs:
        return "-"
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.4f} ± {sd:.4f}"


def results_table(root: Path) -> str:
    rows = ["| variant | seeds | " + " | ".join(m.removeprefix("test/") for m in METRICS)
            + " | tokenizer used | sec/epoch (pre-train / fine-tune) |",
            "|---|---|" + "---|" * len(METRICS) + "---|---|"]
    for v in ORDER:
        runs = sorted((root / "runs" / v).glob("seed*/metrics.json"))
        ms = [json.loads(p.read_text()) for p in runs]
        ms = [m for m in ms if m.get("status") == "completed" and "test/ndcg@10" in m]
        if not ms:
            continue
        cells = [_fmt([m[k] for m in ms]) for k in METRICS]
        toks = ",".join(str(m.get("tokenizer")) for m in ms)
        pre = [m["pretrain_sec_per_epoch"] for m in ms if m.get("pretrain_sec_per_epoch")]
        ft = [m["sec_per_epoch"] for m in ms if m.get("sec_per_epoch")]
        sec = f"{statistics.mean(pre):.0f} / {statistics.mean(ft):.0f}" if pre else f"- / {statistics.mean(ft):.0f}"
        rows.append(f"| {NAMES.get(v, v)} | {len(ms)} | " + " | ".join(cells) + f" | {toks} | {sec} |")
    return "\n".join(rows)


def curriculum_table(root: Path, variant: str = "office") -> str:
    rows = ["| seed | stage (end epoch) | lr weight | mean influence per tokenizer | sampling probabilities |"
            " influence s | best tokenizer (val) |", "|---|---|---|---|---|---|---|"]
    for run in sorted((root / "runs" / variant).glob("seed*")):
        cur = run / "pretrain" / "curriculum.json"
        summ = run / "pretrain" / "summary.json"
        if not cur.is_file():
            continue
        best = json.loads(summ.read_text())["best_tokenizer"] if summ.is_file() else "-"
        for h in json.loads(cur.read_text()):
            mi = " ".join(f"{x:.3g}" for x in h.get("mean_influence", []))
            pr = " ".join(f"{x:.3f}" for x in h["probs"])
            rows.append(f"| {run.name} | {h['stage']} ({h['epoch']}) | {h.get('lr_weight', 0):.2e} | {mi} | {pr} |"
                        f" {h.get('influence_seconds', '-')} | {best} |")
    return "\n".join(rows)


def cost_table(root: Path, variant: str = "office") -> str:
    rows = ["| seed | train examples | influence examples (train / valid) | K | sec per pre-train epoch |"
            " influence sec per stage | influence / epoch |", "|---|---|---|---|---|---|---|"]
    for run in sorted((root / "runs" / variant).glob("seed*")):
        p = run / "pretrain" / "summary.json"
        if not p.is_file():
            continue
        s = json.loads(p.read_text())
        inf = s["influence_seconds_per_stage"]
        rows.append(f"| {run.name} | {s['train_examples']} | {s['influence_train_examples']} / "
                    f"{s['influence_val_examples']} | {len(s['tokenizers_used'])} | {s['sec_per_epoch']} | "
                    f"{', '.join(str(x) for x in inf)} | {s['influence_cost_vs_epoch']} |")
    return "\n".join(rows)


def drift_table(tok_dir: Path) -> str:
    man = json.loads((tok_dir / "tokenizers.json").read_text())
    rows = ["| pair | items whose ID changes | first code changes | per level (1, 2, 3, collision) |",
            "|---|---|---|---|"]
    src = man["sources"]
    for k, d in enumerate(man["adjacent_drift"]):
        a, b = src[k], src[k + 1]
        name = (f"epoch {a['epoch']} -> {b['epoch']}" if man["mode"] == "epochs"
                else f"seed {a['rqvae_seed']} -> {b['rqvae_seed']}")
        lv = ", ".join(f"{x:.3f}" for x in d["changed_per_level"])
        rows.append(f"| {name} | {d['changed']:.3f} | {d['changed_first_code']:.4f} | {lv} |")
    d = man["first_vs_last_drift"]
    rows.append(f"| first -> last | {d['changed']:.3f} | {d['changed_first_code']:.4f} | "
                + ", ".join(f"{x:.3f}" for x in d["changed_per_level"]) + " |")
    coll = ", ".join(f"{p['collision_rate']:.3f}" for p in man["per_tokenizer"])
    return "\n".join(rows) + f"\n\nItems sharing a 3-code tuple before the collision level, per tokenizer: {coll}."


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root", nargs="?", default="outputs/mtgrec")
    a = p.parse_args(argv)
    root = Path(a.root)
    print("## Test metrics\n\n" + results_table(root))
    for mode in ("epochs", "random"):
        d = root / "office_tokenizers" / mode
        if (d / "tokenizers.json").is_file():
            print(f"\n## Tokenizer drift ({mode})\n\n" + drift_table(d))
    print("\n## Curriculum (MTGRec)\n\n" + curriculum_table(root))
    print("\n## Influence cost\n\n" + cost_table(root))


if __name__ == "__main__":
    main()
