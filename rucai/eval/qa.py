"""Open-domain QA metrics: exact match, token F1, cover exact match (SQuAD normalisation) and an
LLM-as-judge through any `rucai.llm` backend with the R1-Searcher judge prompt.

Every metric is `(prediction: str, golds: str | list[str]) -> float` and takes the maximum over the
gold answers. Normalisation is SQuAD's (lower-case, drop punctuation, drop English articles,
collapse whitespace), with R1-Searcher's two extras: `_` is a space and a bare `True`/`False`
prediction or gold reads as `yes`/`no`.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from typing import Any

_PUNCT = set(string.punctuation) | {"‘", "’", "´", "`", "“", "”"}
_ARTICLES = re.compile(r"\b(a|an|the)\b")

# R1-Searcher's judge prompt (paper, Fig. "Judge Prompt"; evaluation/metric_calc_gpt_as_judge.py)
JUDGE_PROMPT = (
    "Given a Question and its Golden Answer, verify whether the Predicted Answer is correct. "
    "The prediction is correct if it fully aligns with the meaning and key information of the Golden Answer. "
    "Respond with True if the prediction is correct and False otherwise.\n"
    "Golden Answer may have multiple options, and matching any one of them is considered correct.\n\n"
    "Question: {question}\nGolden Answer: {reference}\nPredicted Answer: {prediction}\n"
)


def _bool_mapping(s: str) -> str:
    return {"True": "yes", "False": "no"}.get(s.strip(), s)


def normalize_answer(s: str) -> str:
    """SQuAD normalisation (+ `_` -> space, True/False -> yes/no)."""
    s = _bool_mapping(str(s)).lower().replace("_", " ")
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _golds(golds: str | Sequence[str]) -> list[str]:
    if isinstance(golds, str):
        return [golds]
    out = [str(g) for g in golds]
    return out or [""]


def exact_match(prediction: str, golds: str | list[str]) -> float:
    p = normalize_answer(prediction)
    return float(any(p == normalize_answer(g) for g in _golds(golds)))


def _f1(prediction: str, gold: str) -> float:
    p, g = normalize_answer(prediction), normalize_answer(gold)
    # HotpotQA's rule: yes/no/noanswer must match exactly
    if (p in ("yes", "no", "noanswer") or g in ("yes", "no", "noanswer")) and p != g:
        return 0.0
    pt, gt = p.split(), g.split()
    if not pt or not gt:
        return float(pt == gt)
    common = sum((Counter(pt) & Counter(gt)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pt), common / len(gt)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str, golds: str | list[str]) -> float:
    return max(_f1(prediction, g) for g in _golds(golds))


def cover_exact_match(prediction: str, golds: str | list[str]) -> float:
    """1 when every normalised token of a gold answer appears among the prediction's tokens
    (order and contiguity ignored, as in R1-Searcher's `cover_exact_match_score_1`)."""
    pt = set(normalize_answer(prediction).split())
    for g in _golds(golds):
        gt = normalize_answer(g).split()
        if gt and all(t in pt for t in gt):
            return 1.0
    return 0.0


def parse_judge(text: str) -> float:
    """`True`/`False` (first one mentioned) -> 1.0/0.0; anything else counts as wrong."""
    m = re.search(r"\b(true|false)\b", str(text), flags=re.IGNORECASE)
    return float(bool(m) and m.group(1).lower() == "true")


def llm_judge(llm: Any, questions: Sequence[str], golds: Sequence[str | list[str]], predictions: Sequence[str],
              max_tokens: int = 16) -> list[float]:
    """Ask `llm` (any `rucai.llm.LLM`) the paper's judge prompt; greedy, one chat turn per item."""
    from rucai.llm.base import SamplingParams

    prompts = []
    for q, g, p in zip(questions, golds, predictions, strict=True):
        ref = g if isinstance(g, str) else " | ".join(map(str, g))
        prompts.append([{"role": "user", "content": JUDGE_PROMPT.format(question=q, reference=ref, prediction=p)}])
    outs = llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=max_tokens))
    return [parse_judge(o.text) for o in outs]


METRICS = {"exact_match": exact_match, "f1": f1_score, "cover_em": cover_exact_match}
