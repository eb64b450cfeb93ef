"""Multi-hop QA evaluation: R1-Searcher rollouts (greedy, top-5, at most 9 rounds, as the authors'
`eval_search_loacl.py`), standard RAG (top-5 passages for the question, one answer) and naive
generation (no retrieval). Predictions: the `<answer>` content; a search rollout that never answers
predicts "I don't know." (the authors' rule); a baseline without the tag predicts its first line.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from rucai.eval.qa import DEFAULT_NORMALIZATION, cover_exact_match, exact_match, f1_score, llm_judge
from rucai.llm.base import SamplingParams
from rucai.r1searcher.prompts import answer_prompt, extract_answer, search_prompt
from rucai.r1searcher.rollout import SearchRolloutEngine
from rucai.retrieval.base import format_documents

log = logging.getLogger(__name__)

EVAL_SETS = ("hotpotqa_500", "2wiki_500", "musique_500", "bamboogle")
MODES = ("r1searcher", "rag", "naive")


def load_set(data_dir: str | Path, name: str, limit: int | None = None, split: Any = None) -> list[dict]:
    """`multihop_qa/<name>.jsonl`, or a part of `method.split` (split_eval | split_train)."""
    from rucai.r1searcher.split import load_rows

    rows = load_rows(data_dir, name, split)
    return rows[:limit] if limit else rows


def _first_line(text: str) -> str:
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


def predict(llm: Any, tokenizer: Any, retriever: Any, rows: list[dict], mode: str, style: str = "chat",
            topk: int = 5, max_rounds: int = 9, max_tokens: int = 512,
            normalization: str = DEFAULT_NORMALIZATION) -> list[dict]:
    questions = [r["question"] for r in rows]
    greedy = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    t0 = time.perf_counter()
    out = []
    if mode == "r1searcher":
        engine = SearchRolloutEngine(llm, retriever, topk=topk, max_searches=max_rounds, max_rounds=max_rounds,
                                     max_tokens_per_round=max_tokens)
        rolls = engine.run(questions, [search_prompt(q, style, tokenizer) for q in questions], greedy)
        for ro in rolls:
            ans = extract_answer(ro.response) if ro.finish == "answer" else None
            out.append({"response": ro.response, "queries": ro.queries, "searches": ro.num_searches,
                        "finish": ro.finish, "pred": ans if ans is not None else "I don't know."})
    elif mode in ("rag", "naive"):
        docs = retriever.search(questions, topk) if mode == "rag" else [None] * len(questions)
        prompts = [answer_prompt(q, format_documents(d) if d is not None else None, style, tokenizer)
                   for q, d in zip(questions, docs, strict=True)]
        outs = llm.generate(prompts, greedy.replace(max_tokens=min(max_tokens, 64)))
        for o in outs:
            text = o.text if style != "base" else "<answer>" + o.text
            ans = extract_answer(text) if "</answer>" in text else None
            out.append({"response": o.text, "queries": [], "searches": 1 if mode == "rag" else 0,
                        "finish": o.completions[0].finish_reason, "pred": ans if ans is not None else _first_line(
                            text.replace("<answer>", ""))})
    else:
        from rucai.errors import UserError

        raise UserError(f"eval mode {mode!r}; valid: {', '.join(MODES)}")
    dt = time.perf_counter() - t0
    for r, o in zip(rows, out, strict=True):
        o.update(idx=r.get("idx"), question=r["question"], gold=r["answer"],
                 cover_em=cover_exact_match(o["pred"], r["answer"], normalization),
                 f1=f1_score(o["pred"], r["answer"], normalization),
                 em=exact_match(o["pred"], r["answer"], normalization), seconds_per_question=dt / max(len(rows), 1))
    return out


def summarize(rows: list[dict], judge: list[float] | None = None) -> dict[str, float]:
    n = max(len(rows), 1)
    m = {"n": len(rows), "cover_em": sum(r["cover_em"] for r in rows) / n, "f1": sum(r["f1"] for r in rows) / n,
         "em": sum(r["em"] for r in rows) / n, "searches_per_question": sum(r["searches"] for r in rows) / n,
         "answered": sum(r["pred"] != "I don't know." for r in rows) / n,
         "seconds_per_question": rows[0]["seconds_per_question"] if rows else 0.0}
    if judge is not None:
        m["llm_judge"] = sum(judge) / n
    return m


def evaluate(llm: Any, tokenizer: Any, retriever: Any, data_dir: str | Path, out_dir: Path,
             sets: list[str], modes: list[str], limit: int | None, style: str = "chat", topk: int = 5,
             max_rounds: int = 9, max_tokens: int = 512, judge_llm: Any = None,
             normalization: str = DEFAULT_NORMALIZATION, split: Any = None) -> dict[str, Any]:
    """Run every (mode, set); write `samples/<mode>_<set>.jsonl` and `results.csv`; return metrics."""
    import pandas as pd

    from rucai.utils.io import atomic_write_text

    metrics: dict[str, Any] = {}
    table = []
    for mode in modes:
        for name in sets:
            rows = load_set(data_dir, name, limit, split)
            preds = predict(llm, tokenizer, retriever, rows, mode, style, topk, max_rounds, max_tokens,
                            normalization)
            judge = None
            if judge_llm is not None:
                judge = llm_judge(judge_llm, [p["question"] for p in preds], [p["gold"] for p in preds],
                                  [p["pred"] for p in preds])
                for p, j in zip(preds, judge, strict=True):
                    p["llm_judge"] = j
            s = summarize(preds, judge)
            atomic_write_text(out_dir / "samples" / f"{mode}_{name}.jsonl",
                              "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in preds))
            table.append({"mode": mode, "set": name} | s)
            for k, v in s.items():
                metrics[f"eval/{mode}/{name}/{k}"] = v
            log.info("%s %s: cover-EM %.3f F1 %.3f EM %.3f searches/q %.2f (%d questions)", mode, name,
                     s["cover_em"], s["f1"], s["em"], s["searches_per_question"], s["n"])
    df = pd.DataFrame(table)
    atomic_write_text(out_dir / "results.csv", df.to_csv(index=False))
    atomic_write_text(out_dir / "results.md", df.round(3).to_markdown(index=False) + "\n")
    return metrics


def score_released(folder: str | Path) -> dict[str, dict[str, float]]:
    """Cover-EM / F1 / EM of the authors' released evaluation outputs (`data/eval_results/*.jsonl` of
    RUCAIBox/R1-Searcher: `pred_ans`, `answer`) under each normalisation, as their
    `metric_calc_rule.py` computes them (first 2,000 rows, max over gold answers)."""
    from rucai.eval.qa import NORMALIZATIONS

    out: dict[str, dict[str, float]] = {}
    for path in sorted(Path(folder).glob("*.jsonl")):
        rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()][:2000]
        if not rows:
            continue
        n = len(rows)
        res: dict[str, float] = {"n": n}
        for norm in NORMALIZATIONS:
            for name, fn in (("cover_em", cover_exact_match), ("f1", f1_score), ("em", exact_match)):
                res[f"{norm}/{name}"] = round(sum(fn(r["pred_ans"], r["answer"], norm) for r in rows) / n, 4)
        out[path.stem] = res
    return out


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m rucai.r1searcher.evaluate <R1-Searcher checkout>/data/eval_results")
    print(json.dumps(score_released(sys.argv[1]), indent=1))
