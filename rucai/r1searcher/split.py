"""A fixed train / evaluation split of one question file whose paragraphs are all in the BM25 pool
(issue 13 item 5): `method.split` (`rucai/r1searcher/config.py:SplitConfig`).

The default CPU pool indexes the contexts of `multihop_qa/hotpotqa_dev500_with_contexts.jsonl`
(`method.retriever.input`), so every paragraph of every question of that file - its two supporting
paragraphs included - is in the pool, while the training file (`r1searcher_stage1_train`) has none
of its paragraphs there and the evaluation sets only 26 of 500. The split shuffles that file's
questions with its own seed (`method.split.seed`, independent of the run seed: every run of every
seed sees the same split), takes the first `n_eval` as the evaluation part and the next `n_train`
as the training part. Two data names select them wherever a question file is named:

  split_train  `method.stage1.data` / `method.stage2.data`
  split_eval   `method.eval.sets`

Rows: `idx` (the question id), `question`, `answer` (the gold spans, a list), `supporting` (the
titles of its supporting paragraphs).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from rucai.errors import UserError

SPLIT_NAMES = ("split_train", "split_eval")


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) or hasattr(obj, "_get_node") else getattr(obj, key)


def _row(r: dict) -> dict:
    """An IRCoT-style HotpotQA row -> {idx, question, answer (spans), supporting (titles)}."""
    spans = [s for a in r["answers_objects"] for s in a["spans"] if s]
    return {"idx": r["question_id"], "question": r["question_text"], "answer": spans,
            "supporting": [c["title"] for c in r["contexts"] if c.get("is_supporting")]}


def split_rows(data_dir: str | Path, split: Any) -> dict[str, list[dict]]:
    """{"split_train": [...], "split_eval": [...]} from `<data_dir>/multihop_qa/<split.source>.jsonl`;
    disjoint by question id and by question text (checked)."""
    path = Path(data_dir) / "multihop_qa" / f"{_get(split, 'source')}.jsonl"
    if not path.is_file():
        raise UserError(f"{path} not found: set RUCAI_DATA_DIR to the folder holding multihop_qa/ "
                        "(method.split.source names the question file)")
    rows = [_row(json.loads(x)) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    n_eval, n_train = int(_get(split, "n_eval")), int(_get(split, "n_train"))
    if n_eval < 1 or n_train < 1 or n_eval + n_train > len(rows):
        raise UserError(f"method.split: n_eval={n_eval} + n_train={n_train} must be >= 1 each and at most "
                        f"the {len(rows)} questions of {path.name}")
    order = list(range(len(rows)))
    random.Random(int(_get(split, "seed"))).shuffle(order)
    ev = [rows[i] for i in order[:n_eval]]
    tr = [rows[i] for i in order[n_eval:n_eval + n_train]]
    seen = {r["idx"] for r in ev} | {r["question"].strip().lower() for r in ev}
    if any(r["idx"] in seen or r["question"].strip().lower() in seen for r in tr):
        raise UserError(f"{path.name}: a question occurs twice; the split would leak it into training")
    return {"split_train": tr, "split_eval": ev}


def load_rows(data_dir: str | Path, name: str, split: Any = None) -> list[dict]:
    """The rows of a question file `<data_dir>/multihop_qa/<name>.jsonl`, or of a part of
    `method.split` when `name` is split_train | split_eval."""
    if name in SPLIT_NAMES:
        if split is None:
            raise UserError(f"data {name!r} needs the method.split settings (method=r1searcher)")
        return split_rows(data_dir, split)[name]
    path = Path(data_dir) / "multihop_qa" / f"{name}.jsonl"
    if not path.is_file():
        raise UserError(f"{path} not found: set RUCAI_DATA_DIR (paths.data_dir) to the folder holding "
                        f"multihop_qa/, or name a part of method.split ({', '.join(SPLIT_NAMES)})")
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
