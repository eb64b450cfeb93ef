"""Conversational recommenders the search expands: any LLM backend (`LLMCRS`, the paper's phi-4
through vLLM) or a retrieval CRS over catalogue titles (`RetrievalCRS`, for CPUs).

Both implement `propose(dialogue, rounds, n, rng) -> list[list[int]]`: `n` recommendation lists of
k catalogue items, given the dialogue and the search path's earlier rounds [(items, feedback)].
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

from rucai.grsu import prompts as P
from rucai.grsu.simulator import chat


class LLMCRS:
    """k items as "[i]. **Title (year)**" lines (temperature 1, 256 tokens); a response is valid only
    with exactly k items (up to `retries` tries, then the proposal is dropped); titles matched to the
    catalogue (RapidFuzz QRatio, duplicates re-matched). Revision: the path's rounds as earlier chat
    turns, then "recommend k items different from the existing ones according to the feedback"."""

    def __init__(self, llm: Any, catalogue: Mapping[int, str], k: int = 10, retries: int = 5,
                 temperature: float = 1.0, max_tokens: int = 256):
        self.llm, self.k, self.retries = llm, int(k), int(retries)
        self.ids = list(catalogue)
        self.titles = [catalogue[i] for i in self.ids]
        self.temperature, self.max_tokens = float(temperature), int(max_tokens)
        self.calls = 0

    def messages(self, dialogue: str, rounds: Sequence[tuple[list[int], str]]) -> list[dict[str, str]]:
        msgs = chat(P.SYSTEM_CRS, P.CRS_RECOMMEND.format(dialogue=dialogue, k=self.k))
        title = dict(zip(self.ids, self.titles, strict=True))
        for items, feedback in rounds:
            msgs += [{"role": "assistant", "content": P.numbered([title[i] for i in items])},
                     {"role": "user", "content": P.CRS_REVISE.format(feedback=feedback, k=self.k)}]
        return msgs

    def propose(self, dialogue: str, rounds: Sequence[tuple[list[int], str]], n: int,
                rng: random.Random) -> list[list[int]]:
        from rucai.grsu.matching import match_titles, parse_recommendations
        from rucai.llm.base import SamplingParams

        msgs = self.messages(dialogue, rounds)
        out: list[list[int]] = []
        for _ in range(n):
            for _ in range(self.retries):
                self.calls += 1
                sp = SamplingParams(temperature=self.temperature, max_tokens=self.max_tokens, seed=rng.randrange(1 << 30))
                titles = parse_recommendations(self.llm.generate([msgs], sp)[0].text, self.k)
                if titles is not None:
                    out.append([self.ids[j] for j in match_titles(titles, self.titles)])
                    break
        return out


class RetrievalCRS:
    """Dense retrieval over catalogue titles (`rucai.retrieval`'s DenseIndex, MiniLM): the query is
    the dialogue with every critique of the path folded in; items already mentioned in the dialogue
    (`exclude`) and recommended earlier on the path are skipped. The first proposal is the top k; the
    others are k items drawn without replacement from the top `pool` with probability
    softmax(score / temperature) (Gumbel top-k), so a node's expansions differ."""

    def __init__(self, catalogue: Mapping[int, str], k: int = 10, pool: int = 100, temperature: float = 0.05,
                 encoder: str = "all-minilm-l6-v2", batch_size: int = 64):
        from rucai.retrieval.base import Passage
        from rucai.retrieval.index import DenseIndex

        self.k, self.pool, self.temperature = int(k), int(pool), float(temperature)
        self.index = DenseIndex.build([Passage(id=str(i), title="", text=t) for i, t in catalogue.items()],
                                      encoder=encoder, batch_size=batch_size)
        self.calls = 0

    def ranked(self, query: str, exclude: set[int], m: int) -> list[tuple[int, float]]:
        self.calls += 1
        hits = self.index.search([query], k=m + len(exclude))[0]
        return [(int(p.id), p.score) for p in hits if int(p.id) not in exclude][:m]

    @staticmethod
    def query(dialogue: str, rounds: Sequence[tuple[list[int], str]]) -> str:
        return " ".join([dialogue, *(fb for _, fb in rounds)])

    def propose(self, dialogue: str, rounds: Sequence[tuple[list[int], str]], n: int, rng: random.Random,
                exclude: set[int] | frozenset[int] = frozenset()) -> list[list[int]]:
        seen = set(exclude) | {i for items, _ in rounds for i in items}
        cands = self.ranked(self.query(dialogue, rounds), seen, self.pool)
        if not cands:
            return []
        out = [[i for i, _ in cands[: self.k]]]
        for _ in range(n - 1):
            keyed = [(s / self.temperature - math.log(-math.log(rng.random() or 1e-300)), i) for i, s in cands]
            out.append([i for _, i in sorted(keyed, reverse=True)[: self.k]])
        return out
