"""Benchmark the strict math checker against plain math-verify and the OlymMATH authors' protocol.

    python -m rucai.eval.math_bench --data-dir /work/shared/data [--out bench.json] [--limit N]

Cases come from every OlymMATH gold answer (EN/ZH x EASY/HARD): one re-formatted equivalent boxed in
a sentence (must be accepted) and perturbed wrong answers (must be rejected): a changed digit or a
swapped interval bracket / tuple order, an extra answer ("X or Y"), and for integers the gold as a
substring (``1`` + gold). Each checker runs over all cases in this process, pinned to one core
(``os.sched_setaffinity``) unless ``--all-cores``; throughput is cases / wall seconds, math-verify's
import excluded. Checkers: ``strict`` (rucai.eval.math.verify), ``math_verify``
(``math_verify.verify(parse(gold), parse(response))``), ``olymmath_lenient`` (the authors' code path,
main thread) and ``olymmath_lenient@thread`` (same, called from a worker thread, where math-verify
raises and the authors' substring fallback grades everything).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

OLYMMATH_FILES = ("OlymMATH-EN-EASY", "OlymMATH-EN-HARD", "OlymMATH-ZH-EASY", "OlymMATH-ZH-HARD")


def load_olymmath(data_dir: str | Path) -> list[dict]:
    """All OlymMATH rows (problem, answer, subject, unique_id) found under ``data_dir/olymmath``."""
    rows: list[dict] = []
    base = Path(data_dir) / "olymmath"
    for name in OLYMMATH_FILES:
        path = base / f"{name}.jsonl"
        if not path.exists():
            continue
        with open(path, encoding="utf-8") as f:
            rows.extend(json.loads(line) for line in f if line.strip())
    return rows


# ------------------------------------------------------------------------------------------------
# re-formatting and perturbation
# ------------------------------------------------------------------------------------------------

_INT = re.compile(r"^-?\d+$")


def _is_interval(g: str) -> bool:
    s = g.replace("\\left", "").replace("\\right", "").strip()
    return len(s) > 2 and s[0] in "([" and s[-1] in ")]" and "," in s


def reformat(gold: str, k: int) -> str:
    """An equivalent rewrite of ``gold`` (variant ``k``): the kinds of noise models produce."""
    g = gold.strip()
    if _INT.match(g):
        n = int(g)
        variants = [
            f"x = {g}",
            f"\\text{{The answer is }} {g}",
            f"{g}\\text{{ cm}}^2",
            f"{g}.",
            f"n={g}",
            f"{g} \\text{{ ways}}",
        ]
        if abs(n) >= 1000:
            variants += [f"{n:,}", f"{n:,}".replace(",", "{,}")]
        if n < 0:
            variants.append(g.replace("-", "−"))
        return variants[k % len(variants)]
    if "circ" in g:
        num = re.match(r"^(\d+)", g).group(1)
        return [f"{num}°", f"{num}^\\circ", f"{num}\\text{{ degrees}}", f"\\theta = {num}^{{\\circ}}"][k % 4]
    if _is_interval(g):
        s = g.replace("\\frac", "\\dfrac")
        if "\\left" in s:
            s = s.replace("\\left", "").replace("\\right", "")
        else:
            s = "\\left" + s[0] + s[1:-1] + "\\right" + s[-1]
        return s.replace(",", ",\\,")
    variants = [
        g.replace("\\frac", "\\dfrac"),
        "a = " + g.replace("\\frac", "\\tfrac"),
        re.sub(r"\\sqrt\{(\d+)\}", r"√\1", g).replace("-", "−").replace("\\pi", "π").replace("\\times", "×"),
        f"\\text{{Final answer: }} {g}",
        g.replace(" ", "").replace("\\frac", "\\dfrac") + ".",
    ]
    return variants[k % len(variants)]


def perturb(gold: str) -> str:
    """A wrong answer close to ``gold``: bracket swap (intervals), order swap (pairs), else a digit."""
    g = gold.strip()
    if _is_interval(g):
        s = g.replace("\\left", "").replace("\\right", "").strip()
        inner = s[1:-1]
        parts = [p.strip() for p in inner.split(",")]
        if s[0] == "(" and s[-1] == ")" and len(parts) == 2:  # could be a point: swap the order
            return f"({parts[1]}, {parts[0]})"
        return ("(" if s[0] == "[" else "[") + inner + s[-1]
    digits = [m.start() for m in re.finditer(r"\d", g)]
    i = digits[-1]
    d = int(g[i])
    return g[:i] + str((d + 1) % 10 if d != 0 else 1) + g[i + 1 :]


def _sentence(ans: str, lang: str, k: int) -> str:
    if lang == "ZH":
        forms = ["综上所述，所求答案为 $\\boxed{%s}$。", "因此 \\boxed{%s}", "……\n最终答案：$\\boxed{%s}$"]
    else:
        forms = [
            "Therefore, the final answer is $\\boxed{%s}$.",
            "Putting it together we get \\boxed{%s}",
            "... so the answer is $\\boxed{%s}$.",
        ]
    return "Let me work through the problem step by step. ...\n" + forms[k % len(forms)] % ans


def build_cases(rows: list[dict]) -> list[dict]:
    """One equivalent (expected True) and 2-3 wrong answers (expected False) per gold."""
    cases: list[dict] = []
    for k, row in enumerate(rows):
        gold = row["answer"]
        lang = "ZH" if row["unique_id"].endswith("ZH") else "EN"
        uid = row["unique_id"]
        cases.append(
            {
                "id": uid,
                "kind": "equivalent",
                "gold": gold,
                "response": _sentence(reformat(gold, k), lang, k),
                "expected": True,
            }
        )
        wrong = perturb(gold)
        kind = (
            "bracket_swap"
            if _is_interval(gold) and not gold.startswith("(")
            else ("order_swap" if _is_interval(gold) else "perturbed")
        )
        cases.append(
            {
                "id": uid,
                "kind": kind,
                "gold": gold,
                "response": _sentence(wrong, lang, k + 1),
                "expected": False,
            }
        )
        extra = f"{gold} \\text{{ or }} {wrong}" if lang == "EN" else f"{gold} \\text{{或}} {wrong}"
        cases.append(
            {
                "id": uid,
                "kind": "extra_answer",
                "gold": gold,
                "response": _sentence(extra, lang, k + 2),
                "expected": False,
            }
        )
        if _INT.match(gold.strip()):
            cases.append(
                {
                    "id": uid,
                    "kind": "gold_substring",
                    "gold": gold,
                    "response": _sentence("1" + gold.strip().lstrip("-"), lang, k),
                    "expected": False,
                }
            )
    return cases


# ------------------------------------------------------------------------------------------------
# running
# ------------------------------------------------------------------------------------------------


def _checkers() -> dict[str, Callable[[str, str], bool]]:
    from rucai.eval import math as m

    def in_thread(response: str, gold: str) -> bool:
        out: list[bool] = []
        t = threading.Thread(target=lambda: out.append(m.olymmath_lenient_verify(response, gold)))
        t.start()
        t.join()
        return out[0] if out else False

    return {
        "strict": m.verify,
        "math_verify": m.math_verify_baseline,
        "olymmath_lenient": m.olymmath_lenient_verify,
        "olymmath_lenient@thread": in_thread,
    }


def _clear_caches() -> None:
    from rucai.eval import math as m

    for fn in (m._normalize, m._evaluate, m._mv_parse):
        fn.cache_clear()


def run(cases: list[dict], names: list[str] | None = None) -> dict:
    import logging

    import math_verify  # noqa: F401 - import cost excluded from timings

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    checkers = _checkers()
    names = names or list(checkers)
    results: dict[str, dict] = {}
    decisions: dict[str, list[bool]] = {}
    for name in names:
        fn = checkers[name]
        _clear_caches()
        t0 = time.perf_counter()
        got = [bool(fn(c["response"], c["gold"])) for c in cases]
        dt = time.perf_counter() - t0
        decisions[name] = got
        exp = [c["expected"] for c in cases]
        false_acc = sum(g and not e for g, e in zip(got, exp, strict=True))
        false_rej = sum(e and not g for g, e in zip(got, exp, strict=True))
        results[name] = {
            "answers_per_s": len(cases) / dt if dt > 0 else float("inf"),
            "seconds": dt,
            "accuracy": 1 - (false_acc + false_rej) / len(cases),
            "errors": false_acc + false_rej,
            "wrong_accepted": false_acc,
            "correct_rejected": false_rej,
        }
    out: dict = {"n_cases": len(cases), "checkers": results}
    if "strict" in results and "math_verify" in results:
        out["speedup_strict_vs_math_verify"] = (
            results["strict"]["answers_per_s"] / results["math_verify"]["answers_per_s"]
        )
    if "strict" in results and "olymmath_lenient" in results:
        out["speedup_strict_vs_lenient"] = (
            results["strict"]["answers_per_s"] / results["olymmath_lenient"]["answers_per_s"]
        )
    disagreements = {}
    for other in ("olymmath_lenient", "math_verify", "olymmath_lenient@thread"):
        if "strict" in decisions and other in decisions:
            rows = [
                {
                    "id": c["id"],
                    "kind": c["kind"],
                    "gold": c["gold"],
                    "answer": c["response"].rsplit("\n", 1)[-1],
                    "expected": c["expected"],
                    "strict": s,
                    other: o,
                }
                for c, s, o in zip(cases, decisions["strict"], decisions[other], strict=True)
                if s != o
            ]
            out[f"agreement_strict_vs_{other}"] = 1 - len(rows) / len(cases)
            disagreements[other] = rows
    out["disagreements"] = disagreements
    out["errors"] = {
        name: [
            {
                "id": c["id"],
                "kind": c["kind"],
                "gold": c["gold"],
                "answer": c["response"].rsplit("\n", 1)[-1],
                "expected": c["expected"],
            }
            for c, g in zip(cases, got, strict=True)
            if g != c["expected"]
        ]
        for name, got in decisions.items()
    }
    return out


def markdown(report: dict) -> str:
    lines = [
        f"{report['n_cases']} cases; {report.get('cpu', '')}",
        "",
        "| checker | answers/s | accuracy | errors | wrong accepted | correct rejected |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in report["checkers"].items():
        lines.append(
            f"| {name} | {r['answers_per_s']:.0f} | {r['accuracy']:.4f} | {r['errors']} | "
            f"{r['wrong_accepted']} | {r['correct_rejected']} |"
        )
    lines.append("")
    for key in ("speedup_strict_vs_math_verify", "speedup_strict_vs_lenient"):
        if key in report:
            lines.append(f"- {key}: {report[key]:.1f}x")
    for key, val in report.items():
        if key.startswith("agreement_"):
            lines.append(f"- {key}: {val:.4f}")
    for other, rows in report["disagreements"].items():
        lines += [
            "",
            f"### strict vs {other}: {len(rows)} disagreements",
            "",
            "| id | kind | gold | answer | expected | strict | other |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in rows[:200]:
            lines.append(
                f"| {r['id']} | {r['kind']} | `{r['gold']}` | `{r['answer']}` | {r['expected']} | "
                f"{r['strict']} | {r[other]} |"
            )
        if len(rows) > 200:
            lines.append(f"| ... {len(rows) - 200} more | | | | | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--data-dir", default=os.environ.get("RUCAI_DATA_DIR", "/work/shared/data"))
    ap.add_argument("--out", help="write the full report as JSON here")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N OlymMATH rows")
    ap.add_argument("--checkers", default="", help="comma-separated subset of checkers")
    ap.add_argument("--all-cores", action="store_true", help="do not pin the process to one core")
    args = ap.parse_args(argv)
    cpu = "all cores"
    if not args.all_cores and hasattr(os, "sched_setaffinity"):
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        cpu = f"pinned to core {core}"
    rows = load_olymmath(args.data_dir)
    if not rows:
        print(f"error: no OlymMATH files under {Path(args.data_dir) / 'olymmath'}", file=sys.stderr)
        return 2
    if args.limit:
        rows = rows[: args.limit]
    cases = build_cases(rows)
    names = [n for n in args.checkers.split(",") if n] or None
    report = run(cases, names)
    report["cpu"] = cpu
    report["data_dir"] = str(args.data_dir)
    print(markdown(report))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
