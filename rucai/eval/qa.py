"""Open-domain QA metrics: exact match, token F1, cover exact match, and an LLM-as-judge through any
`rucai.llm` backend with the R1-Searcher judge prompt.

Every metric is `(prediction: str, golds: str | list[str], normalization=...) -> float` and takes
the maximum over the gold answers. Normalisation (`NORMALIZATIONS`):

  r1searcher  (default) the authors' rule, as their evaluation (`evaluation/metric_calc_rule.py`) and
              reward servers apply it: a bare `True`/`False` reads as `yes`/`no`, `_` is a space,
              lower-case, punctuation REPLACED BY A SPACE (so `Alzheimer's disease` covers gold
              `Alzheimer`), English articles dropped, whitespace collapsed
  squad       SQuAD's rule (punctuation removed: `alzheimers disease`), kept as a named option

F1 follows the authors too: an empty prediction or gold scores 0.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from typing import Any

_SQUAD_PUNCT = set(string.punctuation) | {"‘", "’", "´", "`", "“", "”"}
_AUTHORS_PUNCT = set(string.punctuation) | {"‘", "’", "´", "`"}  # the authors' exclude set
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
    return {"True": "yes", "False": "no"}.get(s, s)


def _normalize_r1searcher(s: str) -> str:
    s = _bool_mapping(str(s)).replace("_", " ").lower()
    s = "".join(" " if ch in _AUTHORS_PUNCT else ch for ch in s)
    return " ".join(_ARTICLES.sub(" ", s).split())


def _normalize_squad(s: str) -> str:
    s = _bool_mapping(str(s).strip()).lower().replace("_", " ")
    s = "".join(ch for ch in s if ch not in _SQUAD_PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


NORMALIZATIONS = {"r1searcher": _normalize_r1searcher, "squad": _normalize_squad}
DEFAULT_NORMALIZATION = "r1searcher"


def normalize_answer(s: str, normalization: str = DEFAULT_NORMALIZATION) -> str:
    try:
        fn = NORMALIZATIONS[normalization]
    except KeyError:
        from rucai.errors import UserError

        raise UserError(f"normalization={normalization!r}; valid: {', '.join(NORMALIZATIONS)}") from None
    return fn(s)


def _golds(golds: str | Sequence[str]) -> list[str]:
    if isinstance(golds, str):
        return [golds]
    out = [str(g) for g in golds]
    return out or [""]


def exact_match(prediction: str, golds: str | list[str], normalization: str = DEFAULT_NORMALIZATION) -> float:
    p = normalize_answer(prediction, normalization)
    return float(any(p == normalize_answer(g, normalization) for g in _golds(golds)))


def _f1(prediction: str, gold: str, normalization: str) -> float:
    p, g = normalize_answer(prediction, normalization), normalize_answer(gold, normalization)
    # HotpotQA's rule: yes/no/noanswer must match exactly
    if (p in ("yes", "no", "noanswer") or g in ("yes", "no", "noanswer")) and p != g:
        return 0.0
    pt, gt = p.split(), g.split()
    common = sum((Counter(pt) & Counter(gt)).values())
    if common == 0:  # the authors': an empty side scores 0 (also when both are empty)
        return 0.0
    precision, recall = common / len(pt), common / len(gt)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str, golds: str | list[str], normalization: str = DEFAULT_NORMALIZATION) -> float:
    return max(_f1(prediction, g, normalization) for g in _golds(golds))


def cover_exact_match(prediction: str, golds: str | list[str], normalization: str = DEFAULT_NORMALIZATION) -> float:
    """1 when every normalised token of a gold answer appears among the prediction's tokens (order
    and contiguity ignored: the authors' `cover_exact_match_score_1`, the paper's Cover-EM)."""
    pt = normalize_answer(prediction, normalization).split(" ")
    for g in _golds(golds):
        if all(t in pt for t in normalize_answer(g, normalization).split(" ")):
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
