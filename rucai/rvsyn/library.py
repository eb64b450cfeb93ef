"""Step 2 of RV-Syn: the function library.

Nodes are the functions of the kept seed decompositions, each tagged with a mathematical topic.
Duplicates merge twice:

  structure  same AST once names are normalised (`graph.structure_key`: parameters p0, p1, ...,
             locals v0, v1, ..., docstring and function name dropped) -> one node
  meaning    (optional) functions of the same arity whose descriptions embed close together
             (cosine >= threshold with the sentence encoder, all-MiniLM-L6-v2 by default) AND that
             agree on random probe inputs when run in the sandbox, under some permutation of their
             parameters (so `p0 - p1` and `-p1 + p0` merge, `p0 - p1` and `p1 - p0` do not; the
             permutation is recorded and seed calls are re-wired through it)

A canonical node is the most frequent member (ties: first seen). Edges: data flow observed in the
seed graphs (the output of a function feeding parameter `slot` of another, with a count) and shared
topics (every pair of functions with the same topic; kept implicit, counted). Each parameter keeps
the input values it took in the seeds: the ranges composition draws new inputs from.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
from collections import Counter
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from rucai.rvsyn.graph import (
    _RUNTIME,
    arithmetic_body,
    decimals,
    fmt_number,
    function_id,
    parse_function,
    structure_key,
    to_number,
)

log = logging.getLogger(__name__)


def meaning_text(fn: dict[str, Any]) -> str:
    """What the encoder reads for a function: its topic and computation (GSM8K functions: the
    expression, since their sentence is about one story); for LLM functions also name and docstring."""
    expr = arithmetic_body(fn)
    import ast

    body = ast.unparse(expr) if expr is not None else ast.unparse(parse_function(fn["source"]))
    if fn.get("origin") == "llm":
        return f"{fn['name'].replace('_', ' ')}. {fn.get('doc', '')}. {body}"
    return f"{fn['topic']}: {body}"


def _probe_values(rng: random.Random, arity: int, n: int) -> list[list[str]]:
    out = []
    for _ in range(n):
        row = []
        for _ in range(arity):
            r = rng.random()
            v = Fraction(rng.randint(2, 60)) if r < 0.7 else Fraction(rng.randint(1, 999), 100)
            row.append(fmt_number(v))
        out.append(row)
    return out


def probe_program(pairs: list[tuple[dict[str, Any], dict[str, Any]]], perms: list[list[list[int]]],
                  probes: list[list[list[str]]]) -> str:
    """A program that, for each (member g, canonical f) pair, prints the first permutation `perm`
    with g(a) == f(a[perm[0]], a[perm[1]], ...) on every probe input (or null)."""
    import ast

    imports = sorted({imp for g, f in pairs for imp in g.get("imports", []) + f.get("imports", [])})
    lines = [*imports, _RUNTIME]
    for k, (g, f) in enumerate(pairs):
        for tag, fn in (("g", g), ("f", f)):
            node = parse_function(fn["source"])
            node.name = f"_{tag}{k}"
            lines.append(ast.unparse(node))
    conv = [["_exact" if fn.get("numeric", "exact") == "exact" else "_py" for fn in p] for p in pairs]
    lines.append(f"_PERMS = _json.loads({json.dumps(json.dumps(perms))})")
    lines.append(f"_PROBES = _json.loads({json.dumps(json.dumps(probes))})")
    lines.append(f"_CONV = {json.dumps(conv)}")
    lines.append('''
def _val(t):
    if "/" in t or "." not in t and "e" not in t and "n" not in t:
        return Fraction(t)
    return float(t)


def _same(x, y):
    if isinstance(x, Fraction) and isinstance(y, Fraction):
        return x == y
    return _math.isclose(float(x), float(y), rel_tol=1e-9, abs_tol=1e-12)


_res = []
for _k in range(len(_PERMS)):
    _g, _f = globals()["_g%d" % _k], globals()["_f%d" % _k]
    _cg, _cf = globals()[_CONV[_k][0]], globals()[_CONV[_k][1]]
    _found = None
    for _perm in _PERMS[_k]:
        _ok = True
        for _pr in _PROBES[_k]:
            try:
                _a = _val(_text(_g(*[_cg(Fraction(x)) for x in _pr])))
                _b = _val(_text(_f(*[_cf(Fraction(_pr[i])) for i in _perm])))
            except Exception:
                _ok = False
                break
            if not _same(_a, _b):
                _ok = False
                break
        if _ok:
            _found = _perm
            break
    _res.append(_found)
print(_json.dumps(_res))
''')
    return "\n".join(lines)


class _Occurrence:
    __slots__ = ("fn", "count", "first")

    def __init__(self, fn: dict[str, Any], first: int) -> None:
        self.fn, self.count, self.first = fn, 0, first


def build_library(seed_graphs: list[dict[str, Any]], *, structure_merge: bool = True, meaning: str | bool = "auto",
                  encoder: str = "all-minilm-l6-v2", threshold: float = 0.9, probes: int = 8,
                  max_permute_arity: int = 4, seed: int = 0, timeout_s: float = 5.0, memory_mb: int = 512,
                  workers: int | None = None, embed: Callable[[list[str]], Any] | None = None,
                  pairs_per_program: int = 64) -> dict[str, Any]:
    """The library of `seed_graphs` (kept decompositions, each with "seed_id" and "decomposer" in
    its dict): {"functions": {id: fn}, "edges": [...], "seed_graphs": [...], "stats": {...}}.

    meaning: "auto" (merge by meaning when the encoder loads), true (it must load), false (off).
    `embed` replaces the encoder (tests)."""
    # ---- occurrences (every step of every seed graph is one function) and the structure merge
    occ: dict[str, _Occurrence] = {}  # node id -> occurrence group (its first function, count)
    node_of: list[list[str]] = []  # per seed graph, per step: its node id before the meaning merge
    n_occ = 0
    for gi, g in enumerate(seed_graphs):
        ids = []
        for k, st in enumerate(g["steps"]):
            fn = g["functions"][st["fn"]]
            # decomposers name a function by its structure key's hash; without the structure merge
            # every occurrence stays its own node
            nid = function_id(structure_key(fn["source"])) if structure_merge else f"{st['fn']}@{gi}.{k}"
            if nid not in occ:
                occ[nid] = _Occurrence(dict(fn) | {"id": nid}, len(occ))
            occ[nid].count += 1
            n_occ += 1
            ids.append(nid)
        node_of.append(ids)
    reps = list(occ)
    canon: dict[str, tuple[str, list[int]]] = {r: (r, list(range(len(occ[r].fn["params"])))) for r in reps}
    count_struct = {r: occ[r].count for r in reps}
    # ---- the meaning merge
    meaning_stats: dict[str, Any] = {"requested": meaning, "used": False, "encoder": encoder, "threshold": threshold,
                                     "probes": probes, "candidates": 0, "confirmed": 0, "merged": 0}
    if meaning is True or meaning == "auto" or meaning == "true":
        vecs = None
        try:
            texts = [meaning_text(occ[r].fn) for r in reps]
            vecs = embed(texts) if embed is not None else _encode(texts, encoder) if reps else None
        except Exception as e:  # noqa: BLE001 - auto: an unavailable encoder switches the merge off
            if meaning is True or meaning == "true":
                from rucai.errors import UserError

                raise UserError(f"method.library.meaning_merge=true but encoder {encoder!r} is unavailable: {e}") from e
            meaning_stats["reason"] = f"encoder unavailable: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            log.warning("library: meaning merge off (%s)", meaning_stats["reason"])
        if vecs is not None:
            meaning_stats["used"] = True
            merged = _meaning_merge(reps, occ, count_struct, vecs, threshold, probes, max_permute_arity, seed,
                                    timeout_s, memory_mb, workers, meaning_stats, pairs_per_program)
            for f, (rep, perm) in list(canon.items()):
                if rep in merged:
                    top, mperm = merged[rep]
                    # member g(a) == rep(a[perm]) and rep(b) == top(b[mperm]) -> g(a) == top(a[perm[mperm[s]]])
                    canon[f] = (top, [perm[mperm[s]] for s in range(len(mperm))])
    elif meaning not in (False, "false", None):
        raise ValueError(f"meaning={meaning!r}: auto | true | false")
    # ---- canonical functions, input ranges, remapped seed graphs, flow edges
    functions: dict[str, dict[str, Any]] = {}
    observed: dict[str, list[list[Fraction]]] = {}
    flow: Counter = Counter()
    remapped = []
    for gi, g in enumerate(seed_graphs):
        steps = []
        for k, st in enumerate(g["steps"]):
            top, perm = canon[node_of[gi][k]]
            if top not in functions:
                functions[top] = dict(occ[top].fn) | {"members": [], "count": 0}
                observed[top] = [[] for _ in functions[top]["params"]]
            fn = functions[top]
            fn["count"] += 1
            if node_of[gi][k] not in fn["members"]:
                fn["members"].append(node_of[gi][k])
            args = [st["args"][perm[s]] for s in range(len(perm))]
            for s, a in enumerate(args):
                if "input" in a:
                    v = to_number(g["inputs"][a["input"]])
                    if v is not None:
                        observed[top][s].append(v)
                elif "step" in a:
                    flow[(steps[a["step"]]["fn"], top, s)] += 1
            steps.append({"fn": top, "args": args})
        used = {s["fn"] for s in steps}
        remapped.append({"seed_id": g.get("seed_id"), "decomposer": g.get("decomposer"), "inputs": g["inputs"],
                         "steps": steps, "functions": {f: _slim(functions[f]) for f in used}})
    for fid, fn in functions.items():
        fn["ranges"] = [_range(vals) for vals in observed[fid]]
    edges = [{"src": a, "dst": b, "slot": s, "count": c} for (a, b, s), c in sorted(flow.items(), key=lambda t: -t[1])]
    by_topic = Counter(fn["topic"] for fn in functions.values())
    stats = {
        "seed_graphs": len(seed_graphs), "functions_before_merge": n_occ, "after_structure_merge": len(reps),
        "structure_merged": n_occ - len(reps), "after_meaning_merge": len(functions),
        "meaning_merged": len(reps) - len(functions), "meaning_merge": meaning_stats,
        "functions_by_origin": dict(Counter(fn["origin"] for fn in functions.values())),
        "topics": dict(by_topic.most_common()), "flow_edges": len(edges),
        "flow_edge_observations": sum(flow.values()),
        "topic_edges": sum(n * (n - 1) // 2 for n in by_topic.values()),
        "arity": dict(sorted(Counter(len(fn["params"]) for fn in functions.values()).items())),
    }
    return {"functions": functions, "edges": edges, "seed_graphs": remapped, "stats": stats}


def _slim(fn: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fn.items() if k not in ("members", "ranges", "count")}


def _range(vals: list[Fraction]) -> dict[str, Any]:
    if not vals:
        return {"n": 0}
    return {"n": len(vals), "min": fmt_number(min(vals)), "max": fmt_number(max(vals)),
            "integral": all(v.denominator == 1 for v in vals), "decimals": max(decimals(v) for v in vals),
            "values": [fmt_number(v) for v in sorted(set(vals))[:50]]}


def _encode(texts: list[str], encoder: str) -> Any:
    from rucai.rec.embeddings import load_encoder

    model = load_encoder(encoder)
    return model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)


def _meaning_merge(reps: list[str], occ: dict[str, _Occurrence], count: dict[str, int], vecs: Any, threshold: float,
                   probes: int, max_permute_arity: int, seed: int, timeout_s: float, memory_mb: int,
                   workers: int | None, stats: dict[str, Any], pairs_per_program: int) -> dict[str, tuple[str, list[int]]]:
    """{merged rep: (canonical rep, perm)}: candidates by cosine, confirmed by sandboxed probes."""
    import numpy as np

    from rucai.rvsyn.execute import run_programs

    order = sorted(range(len(reps)), key=lambda i: (-count[reps[i]], occ[reps[i]].first))
    v = np.asarray(vecs, dtype="float32")
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    sims = v @ v.T
    arity = [len(occ[r].fn["params"]) for r in reps]
    cands: list[tuple[int, int]] = []  # (member i, canonical j): j comes earlier in `order`
    pos = {i: p for p, i in enumerate(order)}
    for i in range(len(reps)):
        for j in range(len(reps)):
            if i != j and pos[j] < pos[i] and arity[i] == arity[j] and sims[i, j] >= threshold:
                cands.append((i, j))
    stats["candidates"] = len(cands)
    if not cands:
        return {}
    rng = random.Random(seed)
    confirmed: dict[tuple[int, int], list[int]] = {}
    for b in range(0, len(cands), pairs_per_program):
        chunk = cands[b:b + pairs_per_program]
        pairs = [(occ[reps[i]].fn, occ[reps[j]].fn) for i, j in chunk]
        perms = [[list(p) for p in (itertools.permutations(range(arity[i])) if arity[i] <= max_permute_arity
                                    else [tuple(range(arity[i]))])] for i, _ in chunk]
        prb = [_probe_values(rng, arity[i], probes) for i, _ in chunk]
        run = run_programs([probe_program(pairs, perms, prb)], timeout_s * max(1, len(chunk) // 8), memory_mb, workers)[0]
        try:
            found = json.loads([ln for ln in run.stdout.splitlines() if ln.strip()][-1]) if run.status == "ok" else None
        except (IndexError, json.JSONDecodeError):
            found = None
        if not isinstance(found, list) or len(found) != len(chunk):
            log.warning("library: a probe program failed (%s); its %d candidate pairs are not merged", run.status, len(chunk))
            continue
        for (i, j), perm in zip(chunk, found, strict=True):
            if perm is not None:
                confirmed[(i, j)] = perm
    stats["confirmed"] = len(confirmed)
    # greedy in `order`: a function merges into the first earlier function that is still canonical
    merged: dict[str, tuple[str, list[int]]] = {}
    for i in order:
        for j in sorted((j for (ii, j) in confirmed if ii == i), key=lambda j: pos[j]):
            if reps[j] not in merged:
                merged[reps[i]] = (reps[j], confirmed[(i, j)])
                break
    stats["merged"] = len(merged)
    return merged
