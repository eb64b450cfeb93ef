"""Outcome rewards, by name. Each takes the response (the text generated after the prompt, inserted
documents included) and the gold answer(s) and returns its components plus `total`.

  paper_stage1      (default, stage 1) retrieval 0.5 when at least one search was made + format 0.5
                    when the response is well formed (paper Sec. 2.2.1)
  paper_stage2      (default, stage 2) answer F1 (the authors' normalisation; 0 without an answer tag)
                    + format penalty -2 when malformed, 0 otherwise
  qwen_base_stage2  the released `reward_server_qwen_zero.py`: paper_stage2 with the extra checks of
                    `strict_format` (no `Assistant`, answer <= 10 words, no CJK outside documents)
  llama_stage1      the released Llama stage-1 server (`train/reward_server_llama_stage1.py`):
                    answer +1 when the answer tag's content covers the gold (cover-EM), -1 otherwise
                    (also without an answer tag); retrieval +0.5 when the query and document tags all
                    occur equally often, at least once, each block starting `(1)`; format +0.5 when
                    there is no `<think>` and exactly one `</think>`, `<answer>`, `</answer>`
  llama_stage1_cem  its answer term alone (+1 / -1), an ablation
  llama_stage2      the released Llama stage-2 server (`train/reward_server_llama_stage2.py`): answer F1
                    of the last `<answer>...</answer>` (0 unless both tags occur) and -1 when malformed:
                    the query and document tags do not all occur equally often (each block starting
                    `(1)`), or not (no `<think>`, exactly one `</think>`, `<answer>`, `</answer>`), or
                    CJK text outside the document blocks. Unlike the Qwen server: no answer-position,
                    `Assistant` or answer-length checks, and -1 instead of -2

"Well formed" (`format_ok`), from the released checks: exactly one `</think>` (and no `<think>` since
the prompt ends in it; one of each when it does not); exactly one `<answer>...</answer>`, after
`</think>`; begin/end query tags and begin/end document tags all occur the same number of times and
every document block starts `<|begin_of_documents|>\\n(1)` or holds `None`; the answer holds no
query or document tags.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from rucai.eval.qa import cover_exact_match, f1_score
from rucai.r1searcher.prompts import (
    BEGIN_ANSWER,
    BEGIN_DOCS,
    BEGIN_QUERY,
    BEGIN_THINK,
    END_ANSWER,
    END_DOCS,
    END_QUERY,
    END_THINK,
)
from rucai.rl.rewards import RewardRegistry

RewardFn = Callable[..., dict[str, float]]
REWARDS = RewardRegistry("reward")

_CJK = re.compile(r"[\u4e00-\u9fff]")
_DOC_BLOCK = re.compile(re.escape(BEGIN_DOCS) + r".*?" + re.escape(END_DOCS), re.DOTALL)


reward = REWARDS.register


def get_reward(name: str) -> RewardFn:
    return REWARDS.lookup(name)


def count_searches(response: str) -> int:
    """Searches that got documents back (a query followed by a document block)."""
    return min(response.count(END_QUERY), response.count(BEGIN_DOCS))


def answer_text(response: str) -> str | None:
    if response.count(BEGIN_ANSWER) < 1 or END_ANSWER not in response.split(BEGIN_ANSWER)[-1]:
        return None
    return response.split(BEGIN_ANSWER)[-1].split(END_ANSWER)[0].strip()


def format_ok(response: str, prompt_opens_think: bool = True) -> bool:
    r = response
    n_open, n_close = r.count(BEGIN_THINK), r.count(END_THINK)
    if (n_open, n_close) != ((0, 1) if prompt_opens_think else (1, 1)):
        return False
    if not prompt_opens_think and r.find(BEGIN_THINK) > r.find(END_THINK):
        return False
    if not r.count(BEGIN_ANSWER) == r.count(END_ANSWER) == 1:
        return False
    a0, a1 = r.find(BEGIN_ANSWER), r.find(END_ANSWER)
    if not r.find(END_THINK) < a0 < a1:
        return False
    counts = {r.count(BEGIN_QUERY), r.count(END_QUERY), r.count(BEGIN_DOCS), r.count(END_DOCS)}
    if len(counts) != 1:
        return False
    n_docs = r.count(BEGIN_DOCS)
    if n_docs != r.count(BEGIN_DOCS + "\n(1)") + r.count(BEGIN_DOCS + "\nNone"):
        return False
    ans = r[a0 + len(BEGIN_ANSWER):a1]
    return not any(t in ans for t in (BEGIN_QUERY, END_QUERY, BEGIN_DOCS, END_DOCS))


def strict_format_ok(response: str, prompt_opens_think: bool = True) -> bool:
    if not format_ok(response, prompt_opens_think):
        return False
    if "Assistant" in response or "assistant" in response:
        return False
    ans = answer_text(response) or ""
    if len(ans.split()) > 10:
        return False
    return not _CJK.search(_DOC_BLOCK.sub("", response))


@reward("paper_stage1")
def paper_stage1(response: str, golds: str | list[str], prompt_opens_think: bool = True) -> dict[str, float]:
    retrieval = 0.5 if count_searches(response) >= 1 else 0.0
    fmt = 0.5 if format_ok(response, prompt_opens_think) else 0.0
    return {"retrieval": retrieval, "format": fmt, "answer": 0.0, "total": retrieval + fmt}


def _stage2(response: str, golds: str | list[str], ok: bool) -> dict[str, float]:
    ans = answer_text(response)
    f1 = f1_score(ans, golds) if ans is not None else 0.0
    penalty = 0.0 if ok else -2.0
    return {"retrieval": 0.0, "format": penalty, "answer": f1, "total": f1 + penalty}


@reward("paper_stage2")
def paper_stage2(response: str, golds: str | list[str], prompt_opens_think: bool = True) -> dict[str, float]:
    return _stage2(response, golds, format_ok(response, prompt_opens_think))


@reward("qwen_base_stage2")
def qwen_base_stage2(response: str, golds: str | list[str], prompt_opens_think: bool = True) -> dict[str, float]:
    return _stage2(response, golds, strict_format_ok(response, prompt_opens_think))


@reward("llama_stage1_cem")
def llama_stage1_cem(response: str, golds: str | list[str], prompt_opens_think: bool = True) -> dict[str, float]:
    ans = answer_text(response)
    hit = ans is not None and cover_exact_match(ans, golds) > 0
    total = 1.0 if hit else -1.0
    return {"retrieval": 0.0, "format": 0.0, "answer": total, "total": total}


@reward("llama_stage1")
def llama_stage1(response: str, golds: str | list[str], prompt_opens_think: bool = True) -> dict[str, float]:
    answer = llama_stage1_cem(response, golds)["answer"]
    c = response.count
    tags = (c(BEGIN_DOCS + "\n"), c(END_DOCS + "\n\n"), c(BEGIN_QUERY), c(END_QUERY), c(BEGIN_DOCS), c(END_DOCS),
            c(BEGIN_DOCS + "\n(1)"))
    retrieval = 0.5 if len(set(tags)) == 1 and tags[0] >= 1 else 0.0
    fmt = 0.5 if c(BEGIN_THINK) == 0 and c(END_THINK) == c(BEGIN_ANSWER) == c(END_ANSWER) == 1 else 0.0
    return {"retrieval": retrieval, "format": fmt, "answer": answer, "total": answer + retrieval + fmt}


@reward("llama_stage2")
def llama_stage2(response: str, golds: str | list[str], prompt_opens_think: bool = True) -> dict[str, float]:
    c = response.count
    pred = response.split(BEGIN_ANSWER)[-1].split(END_ANSWER)[0].strip()  # the server's extract_answer_math
    f1 = f1_score(pred, golds) if BEGIN_ANSWER in response and END_ANSWER in response else 0.0
    tags = (c(BEGIN_DOCS + "\n"), c(END_DOCS + "\n\n"), c(BEGIN_QUERY), c(END_QUERY), c(BEGIN_DOCS), c(END_DOCS),
            c(BEGIN_DOCS + "\n(1)"))
    ok = (len(set(tags)) == 1 and c(BEGIN_THINK) == 0 and c(END_THINK) == c(BEGIN_ANSWER) == c(END_ANSWER) == 1
          and not _CJK.search(_DOC_BLOCK.sub("", response)))
    penalty = 0.0 if ok else -1.0
    return {"retrieval": 0.0, "format": penalty, "answer": f1, "total": f1 + penalty}
