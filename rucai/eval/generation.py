"""Sampled-generation evaluation of math benchmarks (OlymMATH protocol; shared by EASY-EP,
GLoRE and RV-Syn evaluation).

For each problem, k samples are generated with the configured backend and sampling settings,
each is scored by `rucai.eval.math.verify`, and the run reports
- pass@1: mean correctness over the k samples, averaged over problems;
- cons@k: correctness of the majority answer, answers clustered by equivalence;
- pass@1 per subject, tier and language; mean response tokens.
Samples are appended to `samples.jsonl` as they are generated, keyed by (problem, sample index,
sampling config); rerunning in the same output directory generates only what is missing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def sampling_key(llm_identity: dict[str, Any], sampling: dict[str, Any], system_prompt: str | None) -> str:
    """Hash of everything that changes what a sample means (model, decoding, system prompt)."""
    blob = json.dumps({"llm": llm_identity, "sampling": {k: v for k, v in sampling.items() if k != "n"},
                       "system": system_prompt}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_samples(path: Path, key: str) -> dict[tuple[str, int], dict[str, Any]]:
    """Completed samples for this sampling key; a torn last line (crash mid-write) is ignored."""
    done: dict[tuple[str, int], dict[str, Any]] = {}
    if not path.is_file():
        return done
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if row.get("sampling_key") == key:
                done[(row["problem_id"], int(row["sample_idx"]))] = row
    return done


def append_rows(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Append rows as JSON lines and fsync; a torn last line from a crash is closed off first."""
    torn = False
    if path.is_file() and path.stat().st_size > 0:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
    with open(path, "a", encoding="utf-8") as f:
        if torn:
            f.write("\n")
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def generate_samples(llm: Any, todo: list[tuple[Any, list[int]]], prompt: Callable[[Any], Any],
                     sampling: dict[str, Any], chunk_size: int, seed: int, path: Path, key: str,
                     score: Callable[[str, Any], dict[str, Any]]) -> None:
    """Generate the missing samples and append them to `path`, one chunk of problems at a time.

    `todo`: (problem, the sample indices it still lacks); `prompt(problem)`: the chat prompt;
    `score(text, problem)`: the row's extra fields (the extracted answer, the verdict, ...). A chunk's
    sampling seed is `seed` + a hash of its first (problem, sample), so a resumed run draws the same
    samples as an uninterrupted one with the same chunking."""
    import zlib

    from rucai.llm.base import SamplingParams

    for start in range(0, len(todo), chunk_size):
        chunk = todo[start: start + chunk_size]
        for n in sorted({len(m) for _, m in chunk}):  # one request per distinct sample count
            group = [(p, m) for p, m in chunk if len(m) == n]
            prompts = [prompt(p) for p, _ in group]
            chunk_seed = (int(seed) + zlib.crc32(f"{group[0][0].id}:{group[0][1][0]}".encode())) % 2**31
            outputs = llm.generate(prompts, SamplingParams(**(sampling | {"n": n, "seed": chunk_seed})))
            rows = []
            for j, ((p, missing), out) in enumerate(zip(group, outputs, strict=True)):
                for idx, comp in zip(missing, out.completions, strict=True):
                    rows.append({
                        "problem_id": p.id, "sample_idx": idx, "sampling_key": key,
                        "benchmark": p.benchmark, "language": p.language, "tier": p.tier,
                        "subject": p.subject, "prompt": prompts[j][-1]["content"],
                        "response": comp.text, "num_tokens": comp.num_tokens,
                        "finish_reason": comp.finish_reason, "gold": p.answer,
                    } | score(comp.text, p))
            append_rows(path, rows)
        log.info("generated %d/%d problems", min(start + chunk_size, len(todo)), len(todo))


def cluster_majority(answers: list[str | None], equivalent: Callable[[str, str], bool]) -> str | None:
    """The representative of the largest equivalence cluster of extracted answers (ties: first seen).

    As the OlymMATH authors' cons@k: a sample without an answer is not dropped; the empty answers
    form one cluster of their own (identical strings cluster without asking `equivalent`), so a
    problem where most samples answer nothing has the empty majority, which is wrong."""
    clusters: list[list[str]] = []
    for a in answers:
        a = "" if a is None else a
        for c in clusters:
            if a == c[0] or (a and c[0] and equivalent(a, c[0])):
                c.append(a)
                break
        else:
            clusters.append([a])
    if not clusters:
        return None
    return max(clusters, key=len)[0]  # max keeps the first of equal-sized clusters


def summarize(rows: list[dict[str, Any]], problems: dict[str, Any], equivalent: Callable[[str, str], bool],
              is_correct: Callable[[str, str], bool]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Aggregate scored samples into metrics and a per-problem table."""
    by_problem: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_problem[r["problem_id"]].append(r)
    per_problem = []
    for pid, samples in by_problem.items():
        p = problems[pid]
        samples.sort(key=lambda r: r["sample_idx"])
        majority = cluster_majority([s["extracted"] for s in samples], equivalent)
        per_problem.append({
            "problem_id": pid, "benchmark": p.benchmark, "language": p.language, "tier": p.tier,
            "subject": p.subject, "k": len(samples),
            "pass@1": sum(s["correct"] for s in samples) / len(samples),
            "cons": float(bool(majority) and is_correct(majority, p.answer)),  # no answer: wrong
            "majority": majority, "gold": p.answer,
            "mean_tokens": sum(s["num_tokens"] for s in samples) / len(samples),
        })
    n = len(per_problem)
    ks = {r["k"] for r in per_problem}
    k = max(ks) if ks else 0
    metrics: dict[str, Any] = {
        "problems": n, "samples": len(rows), "k": k,
        "eval/pass@1": sum(r["pass@1"] for r in per_problem) / max(n, 1),
        f"eval/cons@{k}": sum(r["cons"] for r in per_problem) / max(n, 1),
        "eval/mean_response_tokens": sum(r["mean_tokens"] for r in per_problem) / max(n, 1),
    }
    for field in ("language", "tier", "subject"):
        groups: dict[str, list[float]] = defaultdict(list)
        for r in per_problem:
            if r[field] is not None:
                groups[str(r[field])].append(r["pass@1"])
        if len(groups) > 1 or field == "subject":
            for g, vals in sorted(groups.items()):
                metrics[f"eval/pass@1/{field}={g}"] = sum(vals) / len(vals)
    return metrics, per_problem


def plot_subjects(metrics: dict[str, Any], path: Path, title: str) -> Path | None:
    items = [(k.split("subject=", 1)[1], v) for k, v in metrics.items() if "/subject=" in k]
    if not items:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(items)), 3.4))
    ax.bar([s for s, _ in items], [100 * v for _, v in items], color="#4C72B0")
    ax.set_ylabel("pass@1 (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    from rucai.utils.io import save_figure

    return save_figure(fig, path)
