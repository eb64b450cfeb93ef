"""Math benchmarks (OlymMATH, MATH-500, MATH, AIME24/25, AMC23, GSM8K, HMMT Feb 2025).

One loader for every format: a benchmark is one or more *splits*, each a JSONL/JSON/Parquet file
(or a folder of them, the Hugging Face dataset layout) plus the field holding the problem and how
to read the gold answer (`answer` field, `\\boxed{}` inside a solution, or GSM8K's `#### 42`).
Each problem carries its language and tier (OlymMATH EN/ZH x EASY/HARD) and subject, so results
can be broken down by them. Instructions follow the benchmark's own protocol (OlymMATH: the
official prefixes in each language, prepended to the problem).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rucai.errors import UserError

INSTRUCTIONS = {
    "en": "Please reason step by step, and put your final answer within \\boxed{}.\n\n",
    "zh": "请逐步推理，并在 \\boxed{} 内给出您的最终答案。\n\n",
}


@dataclass
class MathProblem:
    id: str
    problem: str
    answer: str
    subject: str | None = None
    language: str = "en"
    tier: str | None = None
    benchmark: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def prompt(self, instruction: str | None = None) -> str:
        prefix = INSTRUCTIONS.get(self.language, INSTRUCTIONS["en"]) if instruction is None else instruction
        return prefix + self.problem


def _read_records(path: Path) -> list[dict[str, Any]]:
    if path.is_dir():  # Hugging Face dataset layout: data/*.parquet or *.jsonl shards
        files = sorted(p for ext in ("*.jsonl", "*.json", "*.parquet") for p in path.rglob(ext))
        if not files:
            raise UserError(f"{path} holds no .jsonl/.json/.parquet files")
        return [r for f in files for r in _read_records(f)]
    if path.suffix == ".parquet":
        import pandas as pd

        return pd.read_parquet(path).to_dict("records")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json" and text.lstrip().startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _gold(record: dict[str, Any], answer_field: str, answer_format: str) -> str:
    raw = record.get(answer_field)
    if raw is None:
        raise UserError(f"record has no field {answer_field!r} (fields: {', '.join(record)}); set answer_field=...")
    if answer_format == "gsm8k":
        return str(raw).split("####")[-1].strip().replace(",", "")
    if answer_format == "boxed":
        from rucai.eval.math import extract_answer

        ans = extract_answer(str(raw))
        if ans is None:
            raise UserError(f"no \\boxed{{}} answer in field {answer_field!r}: {str(raw)[:80]!r}")
        return ans
    if isinstance(raw, float) and raw.is_integer():
        return str(int(raw))
    s = str(raw).strip()
    return s[:-2] if s.endswith(".0") and s[:-2].lstrip("-").isdigit() else s


def load_split(
    path: str | Path,
    benchmark: str,
    language: str = "en",
    tier: str | None = None,
    problem_field: str = "problem",
    answer_field: str = "answer",
    answer_format: str = "plain",
    id_field: str | None = None,
    subject_field: str | None = "subject",
    limit: int | None = None,
) -> list[MathProblem]:
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"benchmark data {p} not found; set paths.data_dir=<folder> (or RUCAI_DATA_DIR), "
                        f"or download {benchmark} and point data.splits[...].path at it")
    out = []
    for i, rec in enumerate(_read_records(p)):
        problem = rec.get(problem_field) or rec.get("question")
        if problem is None:
            raise UserError(f"{p}: record {i} has no {problem_field!r} field (fields: {', '.join(rec)})")
        pid = str(rec.get(id_field)) if id_field and rec.get(id_field) is not None else f"{benchmark}-{i}"
        out.append(MathProblem(
            id=pid, problem=str(problem), answer=_gold(rec, answer_field, answer_format),
            subject=str(rec[subject_field]) if subject_field and rec.get(subject_field) is not None else None,
            language=language, tier=tier, benchmark=benchmark,
        ))
        if limit is not None and len(out) >= limit:
            break
    return out


class MathBenchmark:
    """A named benchmark made of splits (dicts of `load_split` arguments)."""

    def __init__(self, name: str, splits: list[dict[str, Any]], limit: int | None = None,
                 instruction: str | None = None):
        self.name = name
        self.splits = splits
        self.limit = limit
        self.instruction = instruction  # None: the benchmark's per-language instruction

    def load(self) -> list[MathProblem]:
        problems: list[MathProblem] = []
        for split in self.splits:
            problems += load_split(**({"benchmark": self.name} | dict(split) | {"limit": self.limit}))
        ids = [p.id for p in problems]
        if len(set(ids)) != len(ids):
            raise UserError(f"benchmark {self.name}: duplicate problem ids; set id_field for its splits")
        return problems
