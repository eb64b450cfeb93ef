"""GRSU's search over CRS interactions, guided by the simulated user's rewards, and the candidate
ranking (the authors' `search.py`, `rank.py`).

Beam search: the root expands `root` CRS proposals (16); a node's reward is the mean simulator
score of its k items (cached per (turn, item)); the `beams` (4) best root children are kept. At each
of `depth` (5) levels every kept node gets a critique from the simulated user and `expand` (4) CRS
revisions; the `beams` best of all children by reward are kept (ties: the earlier child). Depth 0
is the CRS alone (the first root proposal).

Candidate ranking: every item of every node is pooled; `mean` / `sum` of its scores over the nodes
it appears in (scores are against the original dialogue, so `mean` is the item's score), or `vote`
(its number of appearances, ties by mean score); ties by first appearance.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

POOLING = ("mean", "sum", "vote")


@dataclass
class Node:
    items: list[int]
    reward: float
    depth: int
    parent: Node | None = None
    feedback: str | None = None  # the critique that led from the parent to this node
    children: list[Node] = field(default_factory=list)

    def rounds(self) -> list[tuple[list[int], str]]:
        """The path's (items, critique) rounds from the root to this node's parent."""
        out, node = [], self
        while node.parent is not None:
            out.append((node.parent.items, node.feedback))
            node = node.parent
        return out[::-1]


@dataclass
class SearchResult:
    nodes: list[Node]  # every node, in creation order
    kept: list[list[Node]]  # the kept beam at each level (0 = root level)


def search(turn: Any, dialogue: str, propose: Callable[..., list[list[int]]], score: Callable[..., list[float]],
           critique: Callable[[str, Sequence[int]], str] | None, beams: int = 4, depth: int = 5, expand: int = 4,
           root: int = 16, seed: int = 0) -> SearchResult:
    """`propose(dialogue, rounds, n, rng)` (a CRS), `score(turn, dialogue, items)` (simulator or random),
    `critique(dialogue, items)` (the simulator; unused when depth is 0)."""
    rng = random.Random(seed)

    def node(items: list[int], d: int, parent: Node | None = None, feedback: str | None = None) -> Node:
        s = score(turn, dialogue, items)
        n = Node(items, sum(s) / max(len(s), 1), d, parent, feedback)
        if parent is not None:
            parent.children.append(n)
        return n

    def top(nodes: list[Node]) -> list[Node]:
        return [n for _, n in sorted(enumerate(nodes), key=lambda t: (-t[1].reward, t[0]))[:beams]]

    level = [node(items, 0) for items in propose(dialogue, [], root if depth > 0 else 1, rng)]
    nodes = list(level)
    kept = [top(level)]
    for d in range(1, depth + 1):
        children = []
        for parent in kept[-1]:
            fb = critique(dialogue, parent.items)
            rounds = parent.rounds() + [(parent.items, fb)]
            children += [node(items, d, parent, fb) for items in propose(dialogue, rounds, expand, rng)]
        if not children:
            break
        nodes += children
        kept.append(top(children))
    return SearchResult(nodes, kept)


def rank_candidates(nodes: Sequence[Node], turn: Any, dialogue: str, score: Callable[..., list[float]],
                    pooling: str = "mean") -> list[int]:
    """All items of all nodes, best first (see the module docstring)."""
    if pooling not in POOLING:
        raise ValueError(f"pooling={pooling!r}; use one of {POOLING}")
    count: dict[int, int] = {}
    for n in nodes:
        for i in n.items:
            count[i] = count.get(i, 0) + 1
    items = list(count)
    s = dict(zip(items, score(turn, dialogue, items), strict=True))
    key = {"mean": lambda i: (s[i],), "sum": lambda i: (s[i] * count[i],), "vote": lambda i: (count[i], s[i])}[pooling]
    order = {i: k for k, i in enumerate(items)}
    return sorted(items, key=lambda i: (*(-v for v in key(i)), order[i]))
