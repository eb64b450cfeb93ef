"""Compare the three math answer checkers on real model outputs, with hand labels for disagreements.

    python -m rucai.eval.math_bench compare NAME=SAMPLES.jsonl [NAME=SAMPLES.jsonl ...] --out DIR \
        [--labels LABELS.csv] [--all-cores]

Each input is a JSON-lines file of model responses with their gold answers: a ``samples.jsonl`` of a
``math_eval`` run (fields ``problem_id``, ``sample_idx``, ``response``, ``gold``) or any file with
``response`` and ``answer`` (e.g. the DeepSeek-R1 AIME 2023 traces: ``idx``, ``answer``,
``response``) or a benchmark file with reference solutions (``solution`` is read as the response,
``unique_id`` as the id: MATH-500's human-written solutions against its ``answer`` field). ``NAME``
names the set in the outputs (default: the file's stem). The checkers:

- ``strict``: :func:`rucai.eval.math.verify` (this project's checker);
- ``olymmath_lenient``: the OlymMATH authors' released protocol (last ``\\boxed{}``, math-verify,
  substring fallback), main thread as in their script;
- ``math_verify``: plain ``math_verify.verify(parse("$gold$"), parse(response))``, the baseline.

Writes to ``DIR``:

- ``verdicts.csv``: one row per response: set, id, gold, the answer each extraction finds (strict's
  :func:`extract_answer`, the authors' last box), and each checker's verdict;
- ``disagreements.csv``: the rows where the checkers do not all agree, with the hand label
  (``correct``/``incorrect``) and reason from ``--labels`` where one exists (empty where not);
- ``metrics.json``: per set and overall: responses, acceptances per checker, pairwise and
  three-way agreement, and, on the labelled disagreements, each checker's accepted-wrong and
  rejected-correct counts; timings: each checker run over all responses in this process (caches
  cleared, math-verify imported beforehand, pinned to one core unless ``--all-cores``), reported as
  a ratio to the ``math_verify`` baseline of the same run, overall and per set (per-set times are
  the sums of per-response times).

Labels (``--labels``): a CSV with columns ``set, id, extracted, gold, label, reason``, one row per
disagreement, ``label`` in {correct, incorrect}: whether the response's final answer is the gold
answer, judged by a person. Rows are matched on (set, id). Agreement cases are not labelled: when
all three checkers accept or all reject, the counts below say nothing about them.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import time
from collections.abc import Callable
from itertools import combinations
from pathlib import Path

from rucai.errors import UserError

CHECKERS = ("strict", "olymmath_lenient", "math_verify")
BASELINE = "math_verify"
LABELS = ("correct", "incorrect")


def load_responses(spec: str) -> tuple[str, list[dict]]:
    """(set name, cases) from ``NAME=PATH`` or ``PATH``; each case has id, gold, response."""
    name, sep, path = spec.partition("=")
    if not sep or "/" in name:  # a bare path (which may itself contain "=")
        name, path = "", spec
    p = Path(path)
    if not p.is_file():
        raise UserError(f"no such samples file: {p}")
    name = name or p.stem
    cases: list[dict] = []
    with open(p, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line of an interrupted run
            gold = row.get("gold", row.get("answer"))
            response = row.get("response", row.get("solution"))
            if gold is None or response is None:
                raise UserError(f"{p}:{n}: a row needs 'response' (or 'solution') and 'gold' (or 'answer')")
            if "problem_id" in row:
                cid = f"{row['problem_id']}#{row.get('sample_idx', 0)}"
            else:
                cid = str(row.get("idx", row.get("unique_id", row.get("id", n - 1))))
            cases.append({"set": name, "id": cid, "gold": str(gold), "response": response or ""})
    return name, cases


def checkers() -> dict[str, Callable[[str, str], bool]]:
    from rucai.eval import math as m

    return {
        "strict": m.verify,
        "olymmath_lenient": m.olymmath_lenient_verify,
        "math_verify": m.math_verify_baseline,
    }


def _clear_caches() -> None:
    from rucai.eval import math as m

    for fn in (m._normalize, m._evaluate, m._mv_parse):
        fn.cache_clear()


def run_checkers(cases: list[dict]) -> dict[str, float]:
    """Adds each checker's verdict to every case; returns each checker's wall seconds over all."""
    import logging

    import math_verify  # noqa: F401 - import cost excluded from the timings

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    seconds: dict[str, float] = {}
    for name, fn in checkers().items():
        _clear_caches()
        t0 = time.perf_counter()
        for c in cases:
            t1 = time.perf_counter()
            c[name] = bool(fn(c["response"], c["gold"]))
            c[f"{name}_s"] = time.perf_counter() - t1
        seconds[name] = time.perf_counter() - t0
    return seconds


def _timing(cases: list[dict], seconds: dict[str, float] | None = None) -> dict:
    secs = seconds or {k: sum(c[f"{k}_s"] for c in cases) for k in CHECKERS}
    return {
        "responses": len(cases),
        "seconds": secs,
        f"speed_vs_{BASELINE}": {k: (secs[BASELINE] / secs[k]) if secs[k] > 0 else None for k in CHECKERS},
    }


def read_labels(path: str | Path | None) -> dict[tuple[str, str], dict]:
    if not path:
        return {}
    p = Path(path)
    if not p.is_file():
        raise UserError(f"no such labels file: {p}")
    out: dict[tuple[str, str], dict] = {}
    with open(p, encoding="utf-8", newline="") as f:
        for n, row in enumerate(csv.DictReader(f), 2):
            label = (row.get("label") or "").strip()
            if label not in LABELS:
                raise UserError(f"{p}:{n}: label must be one of {', '.join(LABELS)}, got {label!r}")
            out[(row["set"], row["id"])] = row
    return out


def summarize(cases: list[dict], labels: dict[tuple[str, str], dict]) -> dict:
    """Counts for one group of checked cases (see module docstring)."""
    n = len(cases)
    out: dict = {"responses": n, "accepted": {k: sum(c[k] for c in cases) for k in CHECKERS}}
    for a, b in combinations(CHECKERS, 2):
        out[f"agreement/{a}~{b}"] = sum(c[a] == c[b] for c in cases) / n if n else None
    dis = [c for c in cases if len({c[k] for k in CHECKERS}) > 1]
    out["agreement/all_three"] = 1 - len(dis) / n if n else None
    out["disagreements"] = len(dis)
    lab = [(c, labels[(c["set"], c["id"])]["label"]) for c in dis if (c["set"], c["id"]) in labels]
    out["disagreements_labelled"] = len(lab)
    out["labelled_correct"] = sum(lbl == "correct" for _, lbl in lab)
    for k in CHECKERS:
        out[f"{k}/accepted_wrong"] = sum(c[k] and lbl == "incorrect" for c, lbl in lab)
        out[f"{k}/rejected_correct"] = sum((not c[k]) and lbl == "correct" for c, lbl in lab)
    return out


def _csv(rows: list[dict], fields: list[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def compare(specs: list[str], out_dir: str | Path, labels_path: str | Path | None = None) -> dict:
    from rucai.eval.math import extract_answer, olymmath_extract_boxed
    from rucai.utils.io import atomic_write_text

    cases: list[dict] = []
    names: list[str] = []
    for spec in specs:
        name, rows = load_responses(spec)
        if name in names:
            raise UserError(f"set name {name!r} given twice; name the inputs NAME=PATH")
        names.append(name)
        cases.extend(rows)
    if not cases:
        raise UserError("no responses in the inputs")
    labels = read_labels(labels_path)
    seconds = run_checkers(cases)
    for c in cases:
        c["strict_extracted"] = extract_answer(c["response"])
        c["box_extracted"] = olymmath_extract_boxed(c["response"])
        lab = labels.get((c["set"], c["id"]))
        c["label"] = lab["label"] if lab else ""
        c["reason"] = lab.get("reason", "") if lab else ""
    report: dict = {
        "inputs": specs,
        "labels": str(labels_path) if labels_path else None,
        "checkers": list(CHECKERS),
        "sets": {name: summarize([c for c in cases if c["set"] == name], labels) for name in names},
        "all": summarize(cases, labels),
        "timing": _timing(cases, seconds),
        "timing_per_set": {name: _timing([c for c in cases if c["set"] == name]) for name in names},
    }
    dis = [c for c in cases if len({c[k] for k in CHECKERS}) > 1]
    report["unlabelled_disagreements"] = [
        {"set": c["set"], "id": c["id"]} for c in dis if (c["set"], c["id"]) not in labels
    ]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fields = ["set", "id", "gold", "strict_extracted", "box_extracted", *CHECKERS]
    atomic_write_text(out / "verdicts.csv", _csv(cases, fields))
    atomic_write_text(out / "disagreements.csv", _csv(dis, [*fields, "label", "reason"]))
    atomic_write_text(out / "metrics.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return report


def markdown(report: dict) -> str:
    lines = [
        "| set | responses | checker | accepted | accepted wrong | rejected correct |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for name, s in [*report["sets"].items(), ("all", report["all"])]:
        for k in CHECKERS:
            lines.append(
                f"| {name} | {s['responses']} | {k} | {s['accepted'][k]} | "
                f"{s[f'{k}/accepted_wrong']} | {s[f'{k}/rejected_correct']} |"
            )
    lines.append("")
    for name, s in [*report["sets"].items(), ("all", report["all"])]:
        pair = ", ".join(
            f"{key.split('/', 1)[1]} {v:.3f}" for key, v in s.items() if key.startswith("agreement/")
        )
        lines.append(
            f"- {name}: {s['disagreements']} disagreements ({s['disagreements_labelled']} labelled, "
            f"{s['labelled_correct']} of them correct); agreement {pair}"
        )
    t = report["timing"]
    ratio = ", ".join(f"{k} {v:.2f}x" for k, v in t[f"speed_vs_{BASELINE}"].items() if v is not None)
    lines.append(f"- speed relative to {BASELINE} ({t['responses']} responses, {t.get('cpu', '')}): {ratio}")
    for name, ts in report.get("timing_per_set", {}).items():
        r = ", ".join(f"{k} {v:.2f}x" for k, v in ts[f"speed_vs_{BASELINE}"].items() if v is not None)
        lines.append(f"  - {name} ({ts['responses']} responses): {r}")
    if report["unlabelled_disagreements"]:
        lines.append(f"- UNLABELLED disagreements: {len(report['unlabelled_disagreements'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m rucai.eval.math_bench", description=__doc__.split("\n", 1)[0]
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compare", help="run the three checkers over samples files")
    c.add_argument("inputs", nargs="+", help="NAME=PATH or PATH of a JSON-lines file of responses")
    c.add_argument(
        "--out", required=True, help="output folder (verdicts.csv, disagreements.csv, metrics.json)"
    )
    c.add_argument(
        "--labels", help="hand labels of the disagreements (CSV: set,id,extracted,gold,label,reason)"
    )
    c.add_argument("--all-cores", action="store_true", help="do not pin the process to one core")
    args = ap.parse_args(argv)
    cpu = "all cores"
    if not args.all_cores and hasattr(os, "sched_setaffinity"):
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        cpu = f"pinned to core {core}"
    try:
        report = compare(args.inputs, args.out, args.labels)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report["timing"]["cpu"] = cpu
    Path(args.out, "metrics.json").write_text(
        json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
