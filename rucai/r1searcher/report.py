"""Tables and curves of the CPU run on the HotpotQA split (issue 13 item 5): trained policy vs the
learning-rate-0 control, mean +- std over seeds.

    python -m rucai.r1searcher.report outputs/r1s_split --out experiments/r1searcher/results/cpu_hotpot_split

Reads `<root>/<arm>_s<seed>/train` (an `r1searcher.train` run: `stage1/rewards.csv`) and
`<root>/<arm>_s<seed>/eval` (an `r1searcher.eval` run of that policy: `eval/results.csv`), arm =
trained | lr0 (`experiments/r1searcher/results/cpu_hotpot_split/run_all.sh` lays them out so). The lr-0
policy is the initial model bit for bit (checked here against the other lr-0 runs) and greedy
evaluation is deterministic, so one lr-0 evaluation stands for every seed's. Writes into `--out`: each
run's small artefacts (`<arm>_s<seed>/`: metrics.json, config_resolved.yaml, rewards.csv, results.csv|md,
git_state*.txt; never rollouts or weights), `steps.md|csv` (every step, mean +- std per arm),
`final.md|csv` (evaluation on the held-out questions), `curves.png`.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import math
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from rucai.utils.io import atomic_write_text

ARMS = ("trained", "lr0")
STEP_METRICS = {"reward/total": "reward", "searches/frac_rollouts": "search rate", "format/ok": "format rate",
                "answer/cover_em": "cover-EM", "answer/f1": "F1"}
FINAL_METRICS = {"cover_em": "cover-EM", "f1": "F1", "em": "EM", "searches_per_question": "searches / question",
                 "answered": "answered"}
_RUN = re.compile(r"^(trained|lr0)_s(\d+)$")


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def mean_std(xs: list[float]) -> tuple[float, float, int]:
    """Mean, sample std (ddof 1; 0 for one value) and n."""
    n = len(xs)
    if not n:
        return float("nan"), float("nan"), 0
    m = sum(xs) / n
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    return m, sd, n


def _fmt(t: tuple[float, float, int]) -> str:
    m, sd, n = t
    return "-" if not n else f"{m:.3f} (n=1)" if n == 1 else f"{m:.3f} +- {sd:.3f}"


def separable(a: list[float], b: list[float]) -> bool | None:
    """The rule written next to the numbers: mean +- std intervals of the two arms do not overlap
    (None: fewer than two seeds in an arm, no spread to compare with)."""
    (ma, sa, na), (mb, sb, nb) = mean_std(a), mean_std(b)
    if na < 2 or nb < 2:
        return None
    return ma - sa > mb + sb or mb - sb > ma + sa


def _weights_digest(policy: Path) -> str | None:
    files = sorted(policy.glob("*.safetensors"))
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()


def collect(root: Path, eval_dir: str = "eval") -> dict[str, dict[int, dict[str, Any]]]:
    """{arm: {seed: {"steps": [rewards.csv rows], "final": {metric: value} | None, "dirs": (train, eval)}}};
    `eval_dir`: the evaluation run's folder name inside `<arm>_s<seed>/`."""
    out: dict[str, dict[int, dict[str, Any]]] = {a: {} for a in ARMS}
    for d in sorted(root.iterdir()):
        m = _RUN.match(d.name)
        if not m or not (d / "train" / "stage1" / "rewards.csv").is_file():
            continue
        res = d / eval_dir / "eval" / "results.csv"
        final = None
        if res.is_file():
            final = {k: float(v) for k, v in _rows(res)[0].items() if k in FINAL_METRICS}
        out[m.group(1)][int(m.group(2))] = {"steps": _rows(d / "train" / "stage1" / "rewards.csv"), "final": final,
                                            "dirs": (d / "train", d / eval_dir)}
    # the lr-0 control: the same weights in every seed -> one evaluation holds for all
    lr0 = out["lr0"]
    digests = {s: _weights_digest(r["dirs"][0] / "stage1" / "policy") for s, r in lr0.items()}
    evaluated = [s for s, r in lr0.items() if r["final"] is not None]
    if evaluated:
        ref = evaluated[0]
        for s, r in lr0.items():
            if r["final"] is None and digests[s] is not None and digests[s] == digests[ref]:
                r["final"] = dict(lr0[ref]["final"])
                r["final_from"] = ref
    return out


def steps_table(runs: dict[str, dict[int, dict[str, Any]]]) -> list[dict[str, Any]]:
    n_steps = max((len(r["steps"]) for a in ARMS for r in runs[a].values()), default=0)
    table = []
    for step in range(1, n_steps + 1):
        row: dict[str, Any] = {"step": step}
        for arm in ARMS:
            for key, name in STEP_METRICS.items():
                xs = [float(r["steps"][step - 1][key]) for r in runs[arm].values()
                      if len(r["steps"]) >= step and r["steps"][step - 1].get(key) not in (None, "")]
                row[f"{arm} {name}"] = mean_std(xs)
        table.append(row)
    return table


def final_table(runs: dict[str, dict[int, dict[str, Any]]]) -> list[dict[str, Any]]:
    table = []
    for key, name in FINAL_METRICS.items():
        vals = {arm: [r["final"][key] for r in runs[arm].values() if r["final"] is not None] for arm in ARMS}
        table.append({"metric": name, **{arm: mean_std(vals[arm]) for arm in ARMS},
                      **{f"n {arm}": len(vals[arm]) for arm in ARMS},
                      "separable": separable(vals["trained"], vals["lr0"])})
    return table


def _md(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no runs)\n"
    keys = list(rows[0])
    def cell(v: Any) -> str:
        if isinstance(v, tuple):
            return _fmt(v)
        return {True: "yes", False: "no"}[v] if isinstance(v, bool) else "-" if v is None else str(v)

    return "\n".join(["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
                     + ["| " + " | ".join(cell(r[k]) for k in keys) + " |" for r in rows]) + "\n"


def _csv(rows: list[dict[str, Any]]) -> str:
    import io

    if not rows:
        return ""
    flat = []
    for r in rows:
        f: dict[str, Any] = {}
        for k, v in r.items():
            if isinstance(v, tuple):
                f[f"{k} mean"], f[f"{k} std"], f[f"{k} n"] = v
            else:
                f[k] = v
        flat.append(f)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(flat[0]))
    w.writeheader()
    w.writerows(flat)
    return buf.getvalue()


def plot(table: list[dict[str, Any]], out: Path) -> Path | None:
    if not table:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(STEP_METRICS.values())
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 2.8), dpi=80)
    steps = [r["step"] for r in table]
    for ax, name in zip(axes, names, strict=True):
        for arm, color in zip(ARMS, ("tab:blue", "tab:gray"), strict=True):
            m = [r[f"{arm} {name}"][0] for r in table]
            s = [r[f"{arm} {name}"][1] for r in table]
            ax.plot(steps, m, color=color, marker="o", markersize=3, label="trained" if arm == "trained" else "lr 0")
            ax.fill_between(steps, [a - b for a, b in zip(m, s, strict=True)],
                            [a + b for a, b in zip(m, s, strict=True)], color=color, alpha=0.2)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path = out / "curves.png"
    fig.savefig(path)
    plt.close(fig)
    return path


SMALL = ("metrics.json", "config_resolved.yaml")
LIMIT = 1 << 20


def copy_artefacts(runs: dict[str, dict[int, dict[str, Any]]], out: Path, eval_dir: str = "eval") -> None:
    """Each run's small files (< 1 MiB; never rollouts, checkpoints or weights) into out/<arm>_s<seed>/."""
    for arm in ARMS:
        for seed, r in runs[arm].items():
            dest = out / f"{arm}_s{seed}"
            train, ev = r["dirs"]
            picks = [(train / n, f"train_{n}") for n in SMALL] + [(train / "stage1" / "rewards.csv", "rewards.csv")]
            picks += [(p, p.name) for p in sorted(train.glob("git_state*.txt")) + sorted(train.glob("git_diff*.patch"))]
            picks += [(ev / n, f"{eval_dir}_{n}") for n in SMALL]
            picks += [(ev / "eval" / n, f"{eval_dir}_{n}") for n in ("results.csv", "results.md")]
            picks += [(p, f"{eval_dir}_{p.name}") for p in sorted(ev.glob("git_state*.txt"))]
            for src, name in picks:
                if src.is_file() and src.stat().st_size < LIMIT:
                    dest.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, dest / name)
            if "final_from" in r:
                atomic_write_text(dest / f"{eval_dir}_from.txt",
                                  f"lr-0 weights identical to lr0_s{r['final_from']} (sha256 of the safetensors); "
                                  f"its greedy evaluation stands for this seed\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--eval-dir", default="eval", help="the evaluation run folder inside each <arm>_s<seed>/")
    args = ap.parse_args(argv)
    out = args.out or args.root
    out.mkdir(parents=True, exist_ok=True)
    runs = collect(args.root, args.eval_dir)
    copy_artefacts(runs, out, args.eval_dir)
    steps, final = steps_table(runs), final_table(runs)
    seeds = {arm: sorted(runs[arm]) for arm in ARMS}
    head = f"seeds: trained {seeds['trained']}, lr0 {seeds['lr0']}; mean +- std (ddof 1) over seeds\n\n"
    rule = "separable: the two arms' mean +- std intervals do not overlap (-: under two seeds in an arm)\n\n"
    atomic_write_text(out / "steps.md", head + _md(steps))
    atomic_write_text(out / "steps.csv", _csv(steps))
    atomic_write_text(out / "final.md", head + rule + _md(final))
    atomic_write_text(out / "final.csv", _csv(final))
    plot(steps, out)
    sys.stdout.write(head + _md(final) + "\n" + _md(steps))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
