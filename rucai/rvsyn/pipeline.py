"""The RV-Syn stages, each a `rucai.runtime.stages.Stage` with its own folder, JSON-lines output
appended chunk by chunk (`rucai.eval.generation.append_rows`: fsync'ed, a torn last line ignored),
a `stats.json`, and a done record:

  decompose      <decomposer>.jsonl    one row per seed: status kept | the reason, the verified graph
  library        functions.jsonl, edges.jsonl, seed_graphs.jsonl (written once, atomically)
  compose        candidates.jsonl      one row per candidate index: graph + input sets | reason
  execute        executed.jsonl        one row per composed candidate: the chosen inputs, every step value
  backtranslate  problems.jsonl        one row per valid graph: problem, solution, answer
  verify         verified.jsonl        one row per problem: checks, status verified | the reason
  export         sft.jsonl, sample.jsonl (atomic)

A rerun skips the items already in a stage's file (rows are keyed by seed id / candidate id; a
candidate's RNG depends only on the run seed and its index), so an interrupted run ends with the
same output as an uninterrupted one. `AFTER_CHUNK` is a test hook called after every append.
"""

from __future__ import annotations

import json
import logging
import statistics
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rucai.errors import UserError

log = logging.getLogger(__name__)

AFTER_CHUNK: Callable[[str, int], None] | None = None  # (stage, rows written so far) after each append

STAGES = ("decompose", "library", "compose", "execute", "backtranslate", "verify", "export")


# ------------------------------------------------------------------------------------------ helpers


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file; a torn last line (a crash mid-write) is skipped."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def unique(rows: Iterable[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    seen: set[Any] = set()
    out = []
    for r in rows:
        if r[key] not in seen:
            seen.add(r[key])
            out.append(r)
    return out


def _append(stage: str, path: Path, rows: list[dict[str, Any]], total: int) -> None:
    from rucai.eval.generation import append_rows

    append_rows(path, rows)
    if AFTER_CHUNK is not None:
        AFTER_CHUNK(stage, total)


def _write_json(path: Path, obj: Any) -> None:
    from rucai.utils.io import atomic_write_json

    atomic_write_json(path, obj)


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    from rucai.utils.io import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _chunks(items: list[Any], n: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), max(1, n)):
        yield items[i:i + max(1, n)]


def _hist(values: Iterable[int]) -> dict[str, Any]:
    vals = list(values)
    if not vals:
        return {"n": 0}
    return {"n": len(vals), "mean": round(statistics.fmean(vals), 3), "median": statistics.median(vals),
            "min": min(vals), "max": max(vals), "counts": {str(k): v for k, v in sorted(Counter(vals).items())}}


def origin_of(graph: dict[str, Any]) -> str:
    """Which decomposers' functions a graph uses: "gsm8k", "llm" or "gsm8k+llm"."""
    return "+".join(sorted({graph["functions"][s["fn"]]["origin"] for s in graph["steps"]}))


def _by_origin(rows: list[dict[str, Any]], origin: dict[str, str], ok: str) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        o = out.setdefault(origin.get(r["id"], "?"), {"in": 0, "out": 0})
        o["in"] += 1
        o["out"] += int(r["status"] == ok)
    return out


def _exec_kw(m: DictConfig) -> dict[str, Any]:
    e = m.execute
    return {"timeout_s": float(e.timeout_s), "memory_mb": int(e.memory_mb),
            "workers": int(e.workers) if e.workers else None}


class Context:
    """What the stages share: the config, the stage folders' root, a lazily built LLM."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.m = cfg.method
        self.root = Path(self.m.synthesis_dir) if self.m.synthesis_dir else Path(cfg.paths.output_dir)
        self._llm: Any = None

    def llm(self) -> Any:
        if self._llm is None:
            from rucai import llm as rllm

            if self.cfg.get("llm") is None:
                raise UserError("this RV-Syn run needs an LLM (the llm decomposer, llm back-translation or the "
                                "verification solve): add llm=smollm2 (or llm=hf llm.model=...)")
            self._llm = rllm.build(self.cfg.llm, hardware=self.cfg.hardware)
        return self._llm

    def stage(self, name: str) -> Any:
        from rucai.runtime.stages import Stage

        return Stage(self.cfg, name, dir=self.root / name)


# ---------------------------------------------------------------------------------------- decompose


def make_decomposer(ctx: Context, name: str) -> Any:
    from rucai.rvsyn.decompose import GSM8KDecomposer, LLMDecomposer

    d = ctx.m.decompose
    if name == "gsm8k":
        g = d.gsm8k
        return GSM8KDecomposer(str(g.path), int(g.max_seeds) if g.max_seeds else None, str(g.constants),
                               str(g.answer_step))
    if name == "llm":
        g, e = d.llm, ctx.m.execute
        return LLMDecomposer(str(g.path), str(g.exclude) if g.exclude else None, int(g.max_seeds) if g.max_seeds else None,
                             ctx.llm, int(g.max_tokens), float(g.temperature), int(ctx.cfg.seed), float(e.timeout_s),
                             int(e.memory_mb), int(e.workers) if e.workers else None, bool(g.lift_inline))
    raise UserError(f"method.decompose.decomposers has {name!r}; choose from gsm8k, llm")


def run_decompose(ctx: Context, stage: Any) -> dict[str, Any]:
    from rucai.rvsyn.decompose import verify_proposals

    stats: dict[str, Any] = {}
    for name in ctx.m.decompose.decomposers:
        dec = make_decomposer(ctx, str(name))
        seeds = dec.load_seeds()
        path = stage.dir / f"{name}.jsonl"
        done = {r["seed_id"] for r in read_rows(path)}
        todo = [s for s in seeds if s.id not in done]
        log.info("decompose %s: %d seeds, %d done, %d to do", name, len(seeds), len(done), len(todo))
        n = len(done)
        for chunk in _chunks(todo, int(ctx.m.chunk_size)):
            rows = verify_proposals(dec, chunk, dec.propose(chunk), **_exec_kw(ctx.m))
            n += len(rows)
            _append("decompose", path, rows, n)
        ids = {s.id for s in seeds}
        rows = [r for r in unique(read_rows(path), "seed_id") if r["seed_id"] in ids]
        reasons = Counter(r["status"] for r in rows)
        kept = reasons.pop("kept", 0)
        proposed = sum(1 for r in rows if r["status"] == "kept" or r["status"] == "wrong_answer"
                       or str(r["status"]).startswith("run_"))
        stats[name] = {"seeds": len(seeds), "graphs_proposed": proposed, "kept": kept,
                       "yield": round(kept / max(len(seeds), 1), 4), "dropped": dict(reasons.most_common()),
                       "kept_with_lifted_steps": sum(1 for r in rows if r["status"] == "kept"
                                                     and (r.get("info") or {}).get("lifted_steps")),
                       "depth": _hist(_depth(r["graph"]) for r in rows if r["graph"]),
                       "ops": _hist(len(r["graph"]["steps"]) for r in rows if r["graph"])}
    _write_json(stage.dir / "stats.json", stats)
    return {name: {k: v for k, v in s.items() if k in ("seeds", "kept", "yield")} for name, s in stats.items()}


def _depth(graph: dict[str, Any]) -> int:
    from rucai.rvsyn.graph import depth

    return depth(graph)


# ------------------------------------------------------------------------------------------ library


def run_library(ctx: Context, stage: Any) -> dict[str, Any]:
    from rucai.rvsyn.library import build_library

    lib = ctx.m.library
    graphs = []
    for name in ctx.m.decompose.decomposers:
        for r in unique(read_rows(ctx.root / "decompose" / f"{name}.jsonl"), "seed_id"):
            if r["status"] == "kept" and r["graph"]:
                graphs.append(r["graph"] | {"seed_id": r["seed_id"], "decomposer": name})
    meaning = lib.meaning_merge
    meaning = meaning if isinstance(meaning, bool) else str(meaning).lower()
    out = build_library(graphs, structure_merge=bool(lib.structure_merge), meaning=meaning, encoder=str(lib.encoder),
                        threshold=float(lib.threshold), probes=int(lib.probes),
                        max_permute_arity=int(lib.max_permute_arity), seed=int(ctx.cfg.seed), **_exec_kw(ctx.m))
    _write_jsonl(stage.dir / "functions.jsonl", out["functions"].values())
    _write_jsonl(stage.dir / "edges.jsonl", out["edges"])
    _write_jsonl(stage.dir / "seed_graphs.jsonl", out["seed_graphs"])
    _write_json(stage.dir / "stats.json", out["stats"])
    s = out["stats"]
    return {k: s[k] for k in ("seed_graphs", "functions_before_merge", "after_structure_merge", "after_meaning_merge",
                              "flow_edges", "topic_edges")} | {"meaning_merge_used": s["meaning_merge"]["used"]}


def load_library(ctx: Context) -> dict[str, Any]:
    d = ctx.root / "library"
    return {"functions": {f["id"]: f for f in read_rows(d / "functions.jsonl")},
            "edges": read_rows(d / "edges.jsonl"), "seed_graphs": read_rows(d / "seed_graphs.jsonl")}


# ------------------------------------------------------------------------------------------ compose


def make_composer(ctx: Context, library: dict[str, Any]) -> Any:
    from rucai.rvsyn.compose import Composer

    c = ctx.m.compose
    try:
        return Composer(library, min_depth=int(c.min_depth), max_depth=int(c.max_depth), min_ops=int(c.min_ops),
                        max_ops=int(c.max_ops), max_width=int(c.max_width),
                        topics=list(c.topics) if c.topics else None,
                        max_topics=int(c.max_topics) if c.max_topics else None,
                        flow_edge_prob=float(c.flow_edge_prob), input_sampling=str(c.input_sampling),
                        input_draws=int(c.input_draws))
    except ValueError as e:
        raise UserError(f"method.compose: {e}") from e


def run_compose(ctx: Context, stage: Any) -> dict[str, Any]:
    from rucai.rvsyn.graph import signature

    library = load_library(ctx)
    composer = make_composer(ctx, library)
    path = stage.dir / "candidates.jsonl"
    rows = unique(read_rows(path), "index")
    seen = {signature(g) for g in library["seed_graphs"]} | {r["signature"] for r in rows if r.get("signature")}
    done = {r["index"] for r in rows}
    total = int(ctx.m.compose.num_graphs)
    todo = [i for i in range(total) if i not in done]
    n = len(done)
    for chunk in _chunks(todo, int(ctx.m.chunk_size)):
        out = []
        for i in chunk:
            graph, reason = composer.compose(i, int(ctx.cfg.seed))
            row: dict[str, Any] = {"id": f"g{i:06d}", "index": i, "status": reason or "ok", "graph": graph,
                                   "signature": None}
            if graph is not None:
                sig = signature(graph)
                row["signature"] = sig
                if sig in seen:
                    row |= {"status": "duplicate", "graph": None}
                seen.add(sig)
            out.append(row)
        n += len(out)
        _append("compose", path, out, n)
    rows = [r for r in unique(read_rows(path), "index") if r["index"] < total]
    reasons = Counter(r["status"] for r in rows)
    ok = reasons.pop("ok", 0)
    stats = {"candidates": len(rows), "composed": ok, "yield": round(ok / max(len(rows), 1), 4),
             "by_origin": dict(Counter(origin_of(r["graph"]) for r in rows if r["status"] == "ok")),
             "dropped": dict(reasons.most_common()), "library_functions": len(library["functions"]),
             "options": OmegaConf.to_container(ctx.m.compose, resolve=True)}
    _write_json(stage.dir / "stats.json", stats)
    return {"candidates": len(rows), "composed": ok}


# ------------------------------------------------------------------------------------------ execute


def check_values(values: list[str], integer_values: str, nonnegative: bool, max_abs: float) -> str:
    """"" when an executed input set passes, else the first failed check."""
    from rucai.rvsyn.graph import to_number

    nums = [to_number(v) for v in values]
    if any(v is None for v in nums):
        return "not_a_number"
    if any(abs(float(v)) > max_abs for v in nums):
        return "too_large"
    if nonnegative and any(v < 0 for v in nums):
        return "negative"
    if integer_values == "answer" and nums[-1].denominator != 1:
        return "non_integer_answer"
    if integer_values == "all" and any(v.denominator != 1 for v in nums):
        return "non_integer_value"
    if integer_values not in ("none", "answer", "all"):
        raise UserError(f"method.execute.integer_values={integer_values!r}: none | answer | all")
    return ""


def run_execute(ctx: Context, stage: Any) -> dict[str, Any]:
    from rucai.rvsyn.execute import execute_graphs

    e = ctx.m.execute
    cands = [r for r in unique(read_rows(ctx.root / "compose" / "candidates.jsonl"), "index") if r["status"] == "ok"]
    path = stage.dir / "executed.jsonl"
    done = {r["id"] for r in read_rows(path)}
    todo = [r for r in cands if r["id"] not in done]
    n = len(done)
    for chunk in _chunks(todo, int(ctx.m.chunk_size)):
        results = execute_graphs([r["graph"] for r in chunk], [r["graph"]["input_sets"] for r in chunk], **_exec_kw(ctx.m))
        out = []
        for r, (status, res) in zip(chunk, results, strict=True):
            row: dict[str, Any] = {"id": r["id"], "status": f"run_{status}" if status != "ok" else "", "inputs": None,
                                   "values": None, "answer": None, "draw": None, "draw_reasons": []}
            if status == "ok":
                for k, (inp, one) in enumerate(zip(r["graph"]["input_sets"], res, strict=False)):
                    why = check_values(one["values"], str(e.integer_values), bool(e.nonnegative),
                                       float(e.max_abs_value)) if one.get("ok") else f"error:{one.get('error')}"
                    if not why:
                        row |= {"inputs": inp, "values": one["values"], "answer": one["values"][-1], "draw": k}
                        break
                    row["draw_reasons"].append(why)
                row["status"] = ("valid" if row["draw"] is not None else
                                 Counter(row["draw_reasons"] or ["no_results"]).most_common(1)[0][0])
            out.append(row)
        n += len(out)
        _append("execute", path, out, n)
    ids = {r["id"] for r in cands}
    rows = [r for r in unique(read_rows(path), "id") if r["id"] in ids]
    reasons = Counter(r["status"] for r in rows)
    valid = reasons.pop("valid", 0)
    stats = {"executed": len(rows), "valid": valid, "yield": round(valid / max(len(rows), 1), 4),
             "dropped": dict(reasons.most_common()),
             "draw_failures": dict(Counter(w for r in rows for w in r["draw_reasons"]).most_common()),
             "draws_used": _hist(r["draw"] + 1 for r in rows if r["draw"] is not None),
             "by_origin": _by_origin(rows, {r["id"]: origin_of(r["graph"]) for r in cands}, "valid")}
    _write_json(stage.dir / "stats.json", stats)
    return {"executed": len(rows), "valid": valid}


def executed_graphs(ctx: Context) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(candidate row, executed row) of every valid graph, in candidate order."""
    cands = {r["id"]: r for r in unique(read_rows(ctx.root / "compose" / "candidates.jsonl"), "index")
             if r["status"] == "ok"}
    ex = [r for r in unique(read_rows(ctx.root / "execute" / "executed.jsonl"), "id")
          if r["status"] == "valid" and r["id"] in cands]
    return [(cands[r["id"]], r) for r in sorted(ex, key=lambda r: r["id"])]


# ------------------------------------------------------------------------------------ backtranslate


def run_backtranslate(ctx: Context, stage: Any) -> dict[str, Any]:
    from rucai.llm.base import SamplingParams
    from rucai.rvsyn.backtranslate import clean_llm_problem, llm_prompt, solution_text, template_problem

    b = ctx.m.backtranslate
    kind = str(b.kind)
    if kind not in ("template", "llm"):
        raise UserError(f"method.backtranslate.kind={kind!r}: template | llm")
    items = executed_graphs(ctx)
    path = stage.dir / "problems.jsonl"
    done = {r["id"] for r in read_rows(path)}
    todo = [(c, e) for c, e in items if c["id"] not in done]
    n = len(done)
    for chunk in _chunks(todo, int(ctx.m.chunk_size)):
        if kind == "template":
            texts = [template_problem(c["graph"], e["inputs"]) for c, e in chunk]
        else:
            prompts = [llm_prompt(c["graph"], e["values"], e["inputs"]) for c, e in chunk]
            outs = ctx.llm().generate(prompts, SamplingParams(temperature=float(b.temperature), top_p=0.95,
                                                             max_tokens=int(b.max_tokens), seed=int(ctx.cfg.seed) + n))
            texts = [clean_llm_problem(o.text) for o in outs]
        out = []
        for (c, e), text in zip(chunk, texts, strict=True):
            out.append({"id": c["id"], "status": "ok" if text.strip() else "empty", "backtranslator": kind,
                        "problem": text, "solution": solution_text(c["graph"], e["values"], e["inputs"]),
                        "answer": e["answer"]})
        n += len(out)
        _append("backtranslate", path, out, n)
    ids = {c["id"] for c, _ in items}
    rows = [r for r in unique(read_rows(path), "id") if r["id"] in ids]
    reasons = Counter(r["status"] for r in rows)
    ok = reasons.pop("ok", 0)
    stats = {"graphs": len(rows), "problems": ok, "yield": round(ok / max(len(rows), 1), 4), "backtranslator": kind,
             "dropped": dict(reasons.most_common()),
             "problem_words": _hist(len(r["problem"].split()) for r in rows if r["status"] == "ok")}
    _write_json(stage.dir / "stats.json", stats)
    return {"graphs": len(rows), "problems": ok}


# ------------------------------------------------------------------------------------------- verify


def run_verify(ctx: Context, stage: Any) -> dict[str, Any]:
    from rucai.eval.math import extract_answer, verify
    from rucai.llm.base import SamplingParams
    from rucai.rvsyn.backtranslate import answer_leaked, mentions_inputs, reparse_inputs
    from rucai.rvsyn.execute import execute_graphs
    from rucai.rvsyn.graph import numbers_equal

    v = ctx.m.verify
    graphs = {c["id"]: (c, e) for c, e in executed_graphs(ctx)}
    probs = [r for r in unique(read_rows(ctx.root / "backtranslate" / "problems.jsonl"), "id")
             if r["status"] == "ok" and r["id"] in graphs]
    path = stage.dir / "verified.jsonl"
    done = {r["id"] for r in read_rows(path)}
    # the re-execution sample: the first `reexecute_sample` template problems in id order
    sample = {r["id"] for r in [p for p in probs if p["backtranslator"] == "template"][: int(v.reexecute_sample)]}
    todo = [p for p in probs if p["id"] not in done]
    n = len(done)
    for chunk in _chunks(todo, int(ctx.m.chunk_size)):
        out = []
        for p in chunk:
            c, e = graphs[p["id"]]
            checks: dict[str, Any] = {
                # the answer is the execution's final value (by construction)
                "answer_is_execution": numbers_equal(p["answer"], e["values"][-1]),
                "solution_ends_on_answer": numbers_equal(extract_answer(p["solution"]) or "", p["answer"]),
            }
            if bool(v.require_inputs_mentioned):
                checks["missing_inputs"] = mentions_inputs(p["problem"], e["inputs"])
            if bool(v.reject_answer_leak):
                checks["answer_leaked"] = answer_leaked(c["graph"], p["problem"], e["inputs"], p["answer"])
            out.append({"id": p["id"], "checks": checks})
        # independent re-execution of the numbers parsed out of the sampled template problems
        re_items = [(o, graphs[o["id"]]) for o in out if o["id"] in sample]
        parsed = [(o, ce, reparse_inputs(ce[0]["graph"], next(p for p in chunk if p["id"] == o["id"])["problem"]))
                  for o, ce in re_items]
        runnable = [(o, ce, inp) for o, ce, inp in parsed if inp is not None]
        results = execute_graphs([ce[0]["graph"] for _, ce, _ in runnable], [[inp] for _, _, inp in runnable],
                                 **_exec_kw(ctx.m))
        for o, _, inp in parsed:
            if inp is None:
                o["checks"]["reexecution"] = "unparsed"
        for (o, (_, e), _), (status, res) in zip(runnable, results, strict=True):
            agree = status == "ok" and bool(res) and res[0].get("ok") and numbers_equal(res[0]["values"][-1], e["answer"])
            o["checks"]["reexecution"] = "agrees" if agree else "disagrees"
        if bool(v.solve):
            prompts = [[{"role": "user", "content": f"{ctx.m.export.instruction}{p['problem']}"}] for p in chunk]
            outs = ctx.llm().generate(prompts, SamplingParams(temperature=0.0, top_p=1.0, max_tokens=int(v.solve_max_tokens)))
            for o, p, r in zip(out, chunk, outs, strict=True):
                o["checks"]["solve_agrees"] = bool(verify(r.text, p["answer"]))
        for o in out:
            ch = o["checks"]
            o["status"] = ("answer_mismatch" if not (ch["answer_is_execution"] and ch["solution_ends_on_answer"])
                           else "missing_inputs" if ch.get("missing_inputs")
                           else "answer_leaked" if ch.get("answer_leaked")
                           else "solve_disagrees" if bool(v.solve) and bool(v.solve_filter) and not ch["solve_agrees"]
                           else "verified")
        n += len(out)
        _append("verify", path, out, n)
    ids = {p["id"] for p in probs}
    rows = [r for r in unique(read_rows(path), "id") if r["id"] in ids]
    reasons = Counter(r["status"] for r in rows)
    ok = reasons.pop("verified", 0)
    rex = Counter(r["checks"].get("reexecution") for r in rows if "reexecution" in r["checks"])
    solve = [r["checks"]["solve_agrees"] for r in rows if "solve_agrees" in r["checks"]]
    stats = {"problems": len(rows), "verified": ok, "yield": round(ok / max(len(rows), 1), 4),
             "dropped": dict(reasons.most_common()),
             "answer_is_execution": sum(r["checks"]["answer_is_execution"] for r in rows),
             "solution_ends_on_answer": sum(r["checks"]["solution_ends_on_answer"] for r in rows),
             "reexecution": {"sampled": sum(rex.values()), **dict(rex)},
             "model_solve": {"solved": len(solve), "agrees": sum(solve)} if solve else None,
             "by_origin": _by_origin(rows, {i: origin_of(c["graph"]) for i, (c, _) in graphs.items()}, "verified")}
    _write_json(stage.dir / "stats.json", stats)
    return {"problems": len(rows), "verified": ok}


# ------------------------------------------------------------------------------------------- export


def run_export(ctx: Context, stage: Any) -> dict[str, Any]:
    from rucai.rvsyn.graph import depth, topics

    graphs = {c["id"]: (c, e) for c, e in executed_graphs(ctx)}
    probs = {r["id"]: r for r in unique(read_rows(ctx.root / "backtranslate" / "problems.jsonl"), "id")}
    ver = [r for r in unique(read_rows(ctx.root / "verify" / "verified.jsonl"), "id")
           if r["status"] == "verified" and r["id"] in graphs and r["id"] in probs]
    library = load_library(ctx)
    items = []
    for r in sorted(ver, key=lambda r: r["id"]):
        c, e = graphs[r["id"]]
        p = probs[r["id"]]
        g = c["graph"]
        items.append({"id": r["id"], "problem": p["problem"], "solution": p["solution"], "answer": p["answer"],
                      "topics": topics(g), "depth": depth(g), "ops": len(g["steps"]),
                      "backtranslator": p["backtranslator"],
                      "origins": origin_of(g).split("+"),
                      "functions": [s["fn"] for s in g["steps"]], "inputs": e["inputs"]})
    _write_jsonl(stage.dir / "sft.jsonl", items)
    _write_jsonl(stage.dir / "sample.jsonl", items[: int(ctx.m.export.sample_size)])
    seeds = library["seed_graphs"]
    lib_topics = Counter(f["topic"] for f in library["functions"].values())
    used_fns = {f for it in items for f in it["functions"]}
    syn_topics = Counter(t for it in items for t in it["topics"])
    stats = {
        "items": len(items),
        "seeds": {"graphs": len(seeds), "depth": _hist(depth(g) for g in seeds), "ops": _hist(len(g["steps"]) for g in seeds)},
        "synthesized": {"graphs": len(items), "depth": _hist(it["depth"] for it in items),
                        "ops": _hist(it["ops"] for it in items)},
        "topic_coverage": {"library_topics": dict(lib_topics.most_common()),
                           "synthesized_topics": dict(syn_topics.most_common()),
                           "topics_covered": len(set(syn_topics) & set(lib_topics)),
                           "library_topic_count": len(lib_topics),
                           "functions_used": len(used_fns), "library_functions": len(library["functions"]),
                           "function_coverage": round(len(used_fns) / max(len(library["functions"]), 1), 4)},
        "by_backtranslator": dict(Counter(it["backtranslator"] for it in items)),
        "by_origin": dict(Counter("+".join(it["origins"]) for it in items)),
    }
    _write_json(stage.dir / "stats.json", stats)
    return {"items": len(items), "path": str(stage.dir / "sft.jsonl")}


RUNNERS: dict[str, Callable[[Context, Any], dict[str, Any]]] = {
    "decompose": run_decompose, "library": run_library, "compose": run_compose, "execute": run_execute,
    "backtranslate": run_backtranslate, "verify": run_verify, "export": run_export,
}


def run_stage(ctx: Context, name: str) -> dict[str, Any]:
    st = ctx.stage(name)
    return st.run(lambda s: RUNNERS[name](ctx, s))


def synthesize(ctx: Context, until: str = "export") -> dict[str, Any]:
    """Run the stages in order up to `until`; {stage: its result}."""
    out = {}
    for name in STAGES:
        out[name] = run_stage(ctx, name)
        if name == until:
            break
    return out
