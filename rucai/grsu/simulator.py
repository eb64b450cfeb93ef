"""The generative-reward simulated user: item scoring by the next token's Yes/No, and critiques.

Scoring (the authors' `generate_score`): every recommended item gets its own prompt ending in
"...)?"; the model's answer is the likelier of "Yes" and "No" at the next token, and the score is
P(Yes) when it answers Yes, 1 - P(No) when it answers No (probabilities over the whole vocabulary,
from `LLM.next_token_logprobs`). Scores are cached per (turn, item): every node of a search that
recommends the item reuses it. `RandomScorer` is the ablation's reward: a uniform draw per
(turn, item), cached the same way.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

from rucai.grsu import prompts as P


def yes_no_score(logp_yes: float, logp_no: float) -> float:
    """P(Yes) if Yes is the likelier answer, else 1 - P(No) (full-vocabulary probabilities)."""
    p_yes, p_no = math.exp(logp_yes), math.exp(logp_no)
    return p_yes if p_yes >= p_no else 1.0 - p_no


def chat(system: str, user: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


class Simulator:
    """`score(turn, dialogue, items)` and `critique(dialogue, items)` with one LLM (`rucai.llm`)."""

    def __init__(self, llm: Any, catalogue: Mapping[int, str], critique_tokens: int = 1024,
                 critique_temperature: float = 1.0, seed: int = 0):
        self.llm, self.catalogue = llm, catalogue
        self.critique_tokens, self.critique_temperature, self.seed = int(critique_tokens), float(critique_temperature), seed
        self.cache: dict[tuple[Any, int], float] = {}
        self.score_calls = self.critique_calls = 0
        self._asked: dict[int, int] = {}  # prompt checksum -> times asked

    def score(self, turn: Any, dialogue: str, items: Sequence[int]) -> list[float]:
        todo = [i for i in dict.fromkeys(items) if (turn, i) not in self.cache]
        if todo:
            prompts = [chat(P.SYSTEM_SIM, P.SIM_SCORE.format(dialogue=dialogue, item=self.catalogue[i])) for i in todo]
            for i, lp in zip(todo, self.llm.next_token_logprobs(prompts, ["Yes", "No"]), strict=True):
                self.cache[(turn, i)] = yes_no_score(lp["Yes"], lp["No"])
            self.score_calls += len(todo)
        return [self.cache[(turn, i)] for i in items]

    def critique(self, dialogue: str, items: Sequence[int]) -> str:
        import zlib

        from rucai.llm.base import SamplingParams

        self.critique_calls += 1
        msg = P.SIM_CRITIQUE.format(dialogue=dialogue, items=P.numbered([self.catalogue[i] for i in items]))
        # the sample's seed comes from the prompt (and how often it was asked), not from a call counter: a
        # run resumed mid-evaluation draws the same critiques as one that never stopped
        h = zlib.crc32(msg.encode())
        repeat = self._asked[h] = self._asked.get(h, -1) + 1
        sp = SamplingParams(temperature=self.critique_temperature, max_tokens=self.critique_tokens,
                            seed=(self.seed * 1_000_003 + h + repeat) % 2**31)
        return self.llm.generate([chat(P.SYSTEM_SIM, msg)], sp)[0].text.strip()


class RandomScorer:
    """The random-reward ablation: U(0, 1) per (turn, item), cached (the same item keeps its score)."""

    def __init__(self, seed: int = 0):
        self.rng = random.Random(seed)
        self.cache: dict[tuple[Any, int], float] = {}
        self.score_calls = 0

    def score(self, turn: Any, dialogue: str, items: Sequence[int]) -> list[float]:
        for i in items:
            if (turn, i) not in self.cache:
                self.cache[(turn, i)] = self.rng.random()
                self.score_calls += 1
        return [self.cache[(turn, i)] for i in items]
