"""Step 3 of RV-Syn: compose new computational graphs from connected library functions.

A graph grows backwards from its answer: a root function, then a chain of producers down to the
target depth (each producer feeds one free parameter of the node above it), then further producers
attached to free parameters until the target number of operations, never deeper than the depth and
never wider than `max_width` functions at one distance from the answer. A producer for parameter
`slot` of function f is drawn, with probability `flow_edge_prob`, from the functions observed
feeding f (that slot first, weighted by count; then any slot) and otherwise from the functions
sharing f's topic; `topics` restricts the functions a graph may use and `max_topics` the number of
distinct topics in one graph. Every free parameter is an input, drawn from the values that parameter
took in the seeds (`input_sampling`): `between` (uniform between two of its observed values drawn
at random, with as many decimals as they have: the draws follow the seeds' distribution, a product
seen with 3 and 80,000 mostly gets small numbers), `range` (uniform between the observed min and
max; integers when every observed value was one, else as many decimals as observed), or `observed`
(one of the observed values). A parameter never seen as an input draws from all seed inputs of its origin.
Each candidate gets `input_draws` input sets; execution keeps the first that passes the checks.

Candidate `i` uses its own RNG (seeded by the run seed and `i`), so a resumed run composes exactly
what an uninterrupted one does.
"""

from __future__ import annotations

import math
import random
import zlib
from collections import defaultdict
from fractions import Fraction
from typing import Any

from rucai.rvsyn.graph import decimals, fmt_number, to_number


class Composer:
    def __init__(self, library: dict[str, Any], *, min_depth: int = 2, max_depth: int = 4, min_ops: int = 2,
                 max_ops: int = 6, max_width: int = 3, topics: list[str] | None = None, max_topics: int | None = None,
                 flow_edge_prob: float = 0.8, input_sampling: str = "between", input_draws: int = 8,
                 max_attempts: int = 50) -> None:
        if not 1 <= min_depth <= max_depth:
            raise ValueError(f"depth range [{min_depth}, {max_depth}] is empty")
        if not 1 <= min_ops <= max_ops or max_ops < min_depth:
            raise ValueError(f"operation range [{min_ops}, {max_ops}] does not fit depth >= {min_depth}")
        if max_width < 1:
            raise ValueError("max_width must be >= 1")
        if input_sampling not in ("between", "range", "observed"):
            raise ValueError(f"input_sampling={input_sampling!r}: between | range | observed")
        self.min_depth, self.max_depth, self.min_ops, self.max_ops = min_depth, max_depth, min_ops, max_ops
        self.max_width, self.max_topics, self.flow_edge_prob = max_width, max_topics, flow_edge_prob
        self.input_sampling, self.input_draws, self.max_attempts = input_sampling, input_draws, max_attempts
        allowed = set(topics) if topics else None
        self.functions = {fid: fn for fid, fn in library["functions"].items()
                          if (allowed is None or fn["topic"] in allowed) and fn["params"]}
        self.ids = sorted(self.functions)
        self.feeders: dict[tuple[str, int], list[tuple[str, int]]] = defaultdict(list)
        self.feeders_any: dict[str, list[tuple[str, int]]] = defaultdict(list)
        for e in library["edges"]:
            if e["src"] in self.functions and e["dst"] in self.functions:
                self.feeders[(e["dst"], e["slot"])].append((e["src"], e["count"]))
                self.feeders_any[e["dst"]].append((e["src"], e["count"]))
        self.by_topic: dict[str, list[str]] = defaultdict(list)
        for fid in self.ids:
            self.by_topic[self.functions[fid]["topic"]].append(fid)
        # the fallback pool of each origin: every value observed as an input there
        self.pool: dict[str, list[Fraction]] = defaultdict(list)
        for fn in self.functions.values():
            for r in fn.get("ranges", []):
                self.pool[fn["origin"]] += [v for v in (to_number(x) for x in r.get("values", [])) if v is not None]

    # ------------------------------------------------------------------------------------ structure

    def _producer(self, rng: random.Random, dst: str, slot: int, used_topics: set[str]) -> str | None:
        def ok(fid: str) -> bool:
            t = self.functions[fid]["topic"]
            return self.max_topics is None or t in used_topics or len(used_topics) < self.max_topics

        options: list[tuple[str, float]] = []
        if rng.random() < self.flow_edge_prob:
            options = [(f, c) for f, c in self.feeders.get((dst, slot), []) if ok(f)]
            if not options:
                options = [(f, c) for f, c in self.feeders_any.get(dst, []) if ok(f)]
        if not options:
            options = [(f, 1.0) for f in self.by_topic[self.functions[dst]["topic"]] if ok(f)]
        if not options:
            return None
        fids, weights = zip(*options, strict=True)
        return rng.choices(fids, weights=weights, k=1)[0]

    def _structure(self, rng: random.Random) -> tuple[list[dict[str, Any]], str] | None:
        """Nodes [{fn, level, args: [child node index | None]}] (node 0 the answer)."""
        depth = rng.randint(self.min_depth, self.max_depth)
        ops = rng.randint(max(self.min_ops, depth), self.max_ops)
        root = rng.choice(self.ids)
        nodes = [{"fn": root, "level": 0, "args": [None] * len(self.functions[root]["params"])}]
        used = {self.functions[root]["topic"]}
        per_level = defaultdict(int, {0: 1})
        cur = 0
        for level in range(1, depth):  # the chain that sets the depth
            slot = rng.choice(range(len(nodes[cur]["args"])))
            g = self._producer(rng, nodes[cur]["fn"], slot, used)
            if g is None:
                return None
            nodes.append({"fn": g, "level": level, "args": [None] * len(self.functions[g]["params"])})
            nodes[cur]["args"][slot] = len(nodes) - 1
            used.add(self.functions[g]["topic"])
            per_level[level] += 1
            cur = len(nodes) - 1
        tries = 0
        while len(nodes) < ops and tries < 4 * ops:
            tries += 1
            free = [(i, s) for i, n in enumerate(nodes) for s, a in enumerate(n["args"])
                    if a is None and n["level"] + 1 < depth and per_level[n["level"] + 1] < self.max_width]
            if not free:
                break
            i, s = rng.choice(free)
            g = self._producer(rng, nodes[i]["fn"], s, used)
            if g is None:
                continue
            lvl = nodes[i]["level"] + 1
            nodes.append({"fn": g, "level": lvl, "args": [None] * len(self.functions[g]["params"])})
            nodes[i]["args"][s] = len(nodes) - 1
            used.add(self.functions[g]["topic"])
            per_level[lvl] += 1
        if len(nodes) < self.min_ops:
            return None
        return nodes, ""

    # --------------------------------------------------------------------------------------- inputs

    def draw_input(self, rng: random.Random, fid: str, slot: int) -> str:
        fn = self.functions[fid]
        r = fn.get("ranges", [{}] * len(fn["params"]))[slot] if fn.get("ranges") else {}
        if not r or not r.get("n"):
            pool = self.pool.get(fn["origin"]) or [Fraction(rng.randint(2, 20))]
            return fmt_number(rng.choice(pool))
        if self.input_sampling == "observed":
            return rng.choice(r["values"])
        if self.input_sampling == "between":  # between two observed values: follows their distribution
            a, b = sorted((to_number(rng.choice(r["values"])), to_number(rng.choice(r["values"]))))
            places = max(decimals(a), decimals(b))
        else:
            a, b = to_number(r["min"]), to_number(r["max"])
            places = 0 if r["integral"] else int(r["decimals"])
        scale = 10 ** min(places, 6)
        return fmt_number(Fraction(rng.randint(math.ceil(a * scale), math.floor(b * scale)), scale))

    # ---------------------------------------------------------------------------------------- graph

    def compose(self, index: int, seed: int) -> tuple[dict[str, Any] | None, str]:
        """Candidate `index`: (graph with `input_sets`, "") or (None, reason)."""
        rng = random.Random(zlib.crc32(f"rvsyn-compose:{seed}:{index}".encode()))
        if not self.ids:
            return None, "empty_library"
        built = None
        for _ in range(self.max_attempts):
            built = self._structure(rng)
            if built is not None:
                break
        if built is None:
            return None, "no_connected_graph"
        nodes, _ = built
        # steps in topological order: children before parents (reverse of creation order works: a
        # child is always created after its parent)
        order = list(range(len(nodes) - 1, -1, -1))
        step_of = {n: k for k, n in enumerate(order)}
        leaves: list[tuple[str, int]] = []
        steps = []
        for n in order:
            args = []
            for s, a in enumerate(nodes[n]["args"]):
                if a is None:
                    args.append({"input": f"x{len(leaves)}"})
                    leaves.append((nodes[n]["fn"], s))
                else:
                    args.append({"step": step_of[a]})
            steps.append({"fn": nodes[n]["fn"], "args": args})
        sets = [{f"x{k}": self.draw_input(rng, fid, s) for k, (fid, s) in enumerate(leaves)}
                for _ in range(max(1, self.input_draws))]
        used = {s["fn"] for s in steps}
        graph = {"inputs": sets[0], "steps": steps, "input_sets": sets,
                 "functions": {f: {k: v for k, v in self.functions[f].items() if k not in ("members", "ranges", "count")}
                               for f in used}}
        return graph, ""
