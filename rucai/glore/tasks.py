"""GLoRE tasks.

  glore.vectors   a stage: the style vector (layer-L states of the demonstrations with their long
                  vs their short chain of thought), the same at `other_layer` (a control), the domain
                  memory (keys and values of MATH test problems outside MATH-500), and the paper's
                  probe (leave-one-problem-out accuracy of a linear probe, long vs short, + a 2-D plot).
                  Written to `<vectors dir>/vectors.safetensors`; reused when its done record exists.
  glore.evaluate  the vectors stage, then generation on the `data` benchmark under each condition
                  of `method.conditions` (none, style, domain, both, random, style_other_layer)
                  through the shared resumable sampler (`rucai.eval.generation`): per condition
                  `<condition>/samples.jsonl` and `per_problem.csv`; `summary.md` with accuracy
                  (strict checker), response length and reflection markers per 100 tokens, mean +- std
                  over the sample indices (one seed each).

Only the hf backend can be steered (forward hooks on the loaded model): vLLM and servers cannot.
"""

from __future__ import annotations

import json
import logging
import statistics
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rucai.errors import UserError
from rucai.registry import task

log = logging.getLogger(__name__)


def _settings(cfg: DictConfig) -> DictConfig:
    from rucai.glore.config import CONDITIONS

    m = cfg.get("method")
    if m is None or "layer" not in m or "top_k" not in m or "long_cot" not in m:
        raise UserError("the glore tasks need method=glore (use an experiment=glore/... overlay)")
    bad = [c for c in m.conditions if c not in CONDITIONS]
    if bad:
        raise UserError(f"method.conditions has {bad}; choose from {', '.join(CONDITIONS)}")
    return m


def _preflight(cfg: DictConfig) -> None:
    """A GPU profile without a GPU, or a backend that cannot be steered, stops here in one line."""
    from rucai.runtime import hardware

    hardware.check(cfg.hardware)
    hardware.apply_threads(cfg.hardware)
    m = _settings(cfg)
    if m.needs_gpu:
        hardware.require_cuda(cfg.experiment_name, "a 7-8B model generating up to 10,000 tokens per problem",
                              "glore/smollm2")
    backend = OmegaConf.select(cfg, "llm.backend")
    if backend != "hf":
        raise UserError(f"GLoRE edits hidden states with forward hooks: it needs llm.backend=hf (got {backend}); "
                        f"use llm=hf llm.model=<model> or llm=smollm2")


def _read_jsonl(path: str | Path, what: str) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} {p} not found: see ../shared/README.md (or set paths.data_dir / method.*)")
    return [json.loads(ln) for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]


def think_text(response: str) -> str:
    """The chain of thought of a long-CoT record: the text inside <think> ... </think> (R1) or
    <|begin_of_thought|> ... <|end_of_thought|> (STILL), else all of it."""
    for start, end in (("<think>", "</think>"), ("<|begin_of_thought|>", "<|end_of_thought|>")):
        if start in response or end in response:
            return response.split(start, 1)[-1].split(end, 1)[0].strip()
    return response.strip()


def load_demos(path: str | Path, domain: str | None = None, limit: int | None = None) -> list[tuple[str, str]]:
    """(problem, long chain of thought) pairs from R1 traces ({problem, response}) or STILL's data
    ({question, combined_text, domain}; `domain` keeps one domain)."""
    rows = _read_jsonl(path, "method.long_cot")
    out = []
    for r in rows:
        if domain and r.get("domain", domain) != domain:
            continue
        problem, text = r.get("problem", r.get("question")), r.get("response", r.get("combined_text"))
        if problem is None or text is None:
            raise UserError(f"{path}: a record without problem/question or response/combined_text; "
                            f"method.long_cot takes R1 traces or STILL's long-form thought data")
        out.append((problem, think_text(text)))
    if not out:
        raise UserError(f"{path} has no demonstrations" + (f" of domain {domain}" if domain else ""))
    return out[: limit or None]


def _short_cots(llm: Any, m: DictConfig, problems: list[str], path: Path) -> list[str]:
    """The model's own vanilla chain of thought per problem (greedy, `short_cot_tokens`), appended to
    a JSON-lines file as each batch finishes: an interrupted stage resumes there."""
    from rucai.eval.generation import append_rows
    from rucai.glore.method import prompt_messages
    from rucai.llm.base import SamplingParams

    done: dict[str, str] = {}
    if path.is_file():
        for ln in path.read_text(encoding="utf-8").splitlines():
            try:
                r = json.loads(ln)
            except json.JSONDecodeError:  # a torn last line
                continue
            done[r["problem"]] = r["cot"]
    todo = [p for p in dict.fromkeys(problems) if p not in done]
    sp = SamplingParams(temperature=0.0, max_tokens=int(m.short_cot_tokens))
    step = max(1, int(getattr(llm, "batch_size", 8)))
    for i in range(0, len(todo), step):
        chunk = todo[i:i + step]
        outs = llm.generate([prompt_messages(p, m.instruction, llm.system_prompt) for p in chunk], sp)
        rows = [{"problem": p, "cot": o.text} for p, o in zip(chunk, outs, strict=True)]
        append_rows(path, rows)
        done |= {r["problem"]: r["cot"] for r in rows}
        log.info("short CoTs %s: %d/%d", path.name, min(i + step, len(todo)), len(todo))
    return [done[p] for p in problems]


def build_vectors(cfg: DictConfig, llm: Any, stage_dir: Path) -> dict[str, Any]:
    """The vectors stage's work (see the module docstring); returns its summary."""
    import torch

    from rucai.glore.method import (
        plot_projection,
        probe_accuracy,
        prompt_ids,
        style_vector,
        truncate_cot,
    )
    from rucai.llm.steering import layer_states, save_vectors
    from rucai.utils.io import atomic_write_text

    m = _settings(cfg)
    tok, sysp = llm.tokenizer, llm.system_prompt
    layers = [int(m.layer), int(m.other_layer)]
    demos = load_demos(m.long_cot, m.long_cot_domain, m.max_demos)
    problems = [p for p, _ in demos]
    long = [truncate_cot(tok, c, int(m.max_cot_tokens)) for _, c in demos]
    short = _short_cots(llm, m, problems, stage_dir / "demo_short_cots.jsonl")

    def ids(p: str, a: str | None = None) -> list[int]:
        return prompt_ids(tok, p, a, m.instruction, sysp)

    h_long = layer_states(llm.model, [ids(p, c) for p, c in zip(problems, long, strict=True)], layers)
    h_short = layer_states(llm.model, [ids(p, c) for p, c in zip(problems, short, strict=True)], layers)
    # the paper's analysis: long vs short states are linearly separable at layer L
    x = torch.cat([h_long[0], h_short[0]])
    y = torch.cat([torch.ones(len(problems)), torch.zeros(len(problems))])
    probe = probe_accuracy(x, y, list(range(len(problems))) * 2)
    plot_projection(x, y, stage_dir / "probe_pca.png",
                    title=f"layer {m.layer} last-token states (LOPO probe accuracy {probe:.2f})")
    # a confound check: the long CoT cut to its problem's short-CoT length, so both states sit at the
    # same depth into the answer and the probe cannot read length or position
    short_len = [len(tok(c, add_special_tokens=False)["input_ids"]) for c in short]
    matched = [truncate_cot(tok, c, n) for (_, c), n in zip(demos, short_len, strict=True)]
    h_matched = layer_states(llm.model, [ids(p, c) for p, c in zip(problems, matched, strict=True)], int(m.layer))
    probe_matched = probe_accuracy(torch.cat([h_matched, h_short[0]]), y, list(range(len(problems))) * 2)

    excl = {r["problem"] for r in _read_jsonl(m.exclude_source, "method.exclude_source")}
    mem = [r["problem"] for r in _read_jsonl(m.memory_source, "method.memory_source")
           if r["problem"] not in excl][: int(m.memory_size)]
    if not mem:
        raise UserError(f"the domain memory is empty: every problem of {m.memory_source} is in {m.exclude_source}")
    mem_short = _short_cots(llm, m, mem, stage_dir / "memory_short_cots.jsonl")
    keys = layer_states(llm.model, [ids(p) for p in mem], int(m.layer))
    values = layer_states(llm.model, [ids(p, c) for p, c in zip(mem, mem_short, strict=True)], int(m.layer))
    path = save_vectors(stage_dir / "vectors.safetensors",
                        {"style": style_vector(h_long[0], h_short[0]),
                         "style_other_layer": style_vector(h_long[1], h_short[1]),
                         "keys": keys, "values": values},
                        {"layer": m.layer, "other_layer": m.other_layer})
    lengths = {"long_cot_tokens_mean": statistics.fmean(len(tok(c, add_special_tokens=False)["input_ids"]) for c in long),
               "short_cot_tokens_mean": statistics.fmean(len(tok(c, add_special_tokens=False)["input_ids"]) for c in short)}
    result = {"vectors": str(path), "demos": len(problems), "memory": len(mem), "probe_accuracy": probe,
              "probe_accuracy_length_matched": probe_matched,
              "style_norm": float(style_vector(h_long[0], h_short[0]).norm()),
              "state_norm_mean": float(h_short[0].norm(dim=-1).mean())} | lengths
    atomic_write_text(stage_dir / "probe.json", json.dumps(result, indent=2) + "\n")
    return result


def _vectors_stage(cfg: DictConfig, llm_factory: Any) -> dict[str, Any]:
    from rucai.runtime.stages import Stage

    m = _settings(cfg)
    stage = Stage(cfg, "vectors", dir=m.vectors_dir)
    return stage.run(lambda st: build_vectors(cfg, llm_factory(), st.dir))


@task("glore.vectors")
def vectors(cfg: DictConfig) -> dict[str, Any]:
    from rucai import llm as rllm

    _preflight(cfg)
    return _vectors_stage(cfg, lambda: rllm.build(cfg.llm, hardware=cfg.hardware))


def condition_vectors(cond: str, vec: dict[str, Any], domain: Any, random_seed: int) -> tuple[int | None, Any, Any]:
    """(layer offset key, first-position vector, last-position vector) of one condition: `layer` is
    None for the method's layer, "other" for the other-layer control. `domain`: the prompt's v_domain."""
    from rucai.glore.method import random_like

    return {
        "none": (None, None, None),
        "style": (None, vec["style"], None),
        "domain": (None, None, domain),
        "both": (None, vec["style"], domain),
        "random": (None, random_like(vec["style"], seed=random_seed), None),
        "style_other_layer": ("other", vec["style_other_layer"], None),
    }[cond]


def condition_stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per sample index (one seed each): accuracy, mean response tokens, reflection markers per 100
    generated tokens (pooled over the responses) and the share of responses with any marker; then
    mean and (n > 1) sample std over the indices."""
    from collections import defaultdict

    by_idx: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_idx[int(r["sample_idx"])].append(r)
    per_seed = []
    for _, rs in sorted(by_idx.items()):
        tokens = sum(r["num_tokens"] for r in rs)
        per_seed.append({
            "accuracy": statistics.fmean(float(r["correct"]) for r in rs),
            "tokens": tokens / len(rs),
            "reflection_per_100_tokens": 100.0 * sum(r["reflections"] for r in rs) / max(tokens, 1),
            "reflective_share": statistics.fmean(float(r["reflections"] > 0) for r in rs),
        })
    out: dict[str, Any] = {"seeds": len(per_seed), "responses": len(rows)}
    for k in per_seed[0] if per_seed else []:
        vals = [s[k] for s in per_seed]
        out[k] = statistics.fmean(vals)
        out[f"{k}_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        out[f"{k}_per_seed"] = vals
    return out


@task("glore.evaluate")
def evaluate(cfg: DictConfig) -> dict[str, Any]:
    import pandas as pd
    from hydra.utils import instantiate

    from rucai import llm as rllm
    from rucai.eval.generation import generate_samples, read_samples, sampling_key
    from rucai.eval.math import extract_answer, verify
    from rucai.glore.method import domain_vectors, prompt_ids, prompt_messages, reflection_count
    from rucai.llm.steering import Steerer, layer_states, load_vectors
    from rucai.utils.io import atomic_write_text

    _preflight(cfg)
    m = _settings(cfg)
    out_dir = Path(cfg.paths.output_dir)
    ev = cfg.eval
    bench = instantiate(cfg.data, _convert_="all")
    problems = bench.load()
    if ev.get("max_problems"):
        problems = problems[: int(ev.max_problems)]
    by_id = {p.id: p for p in problems}
    llm = rllm.build(cfg.llm, hardware=cfg.hardware)
    info = _vectors_stage(cfg, lambda: llm)
    vec = load_vectors(info["vectors"])
    sysp = llm.system_prompt

    def messages(p: Any) -> list[dict[str, str]]:
        return prompt_messages(p.problem, m.instruction, sysp)

    def ids(p: Any) -> tuple[int, ...]:
        return tuple(prompt_ids(llm.tokenizer, p.problem, None, m.instruction, sysp))

    # the query of each test prompt: its layer-L state at the last prompt token, as the memory's keys
    need_domain = any(c in ("domain", "both") for c in m.conditions)
    queries = layer_states(llm.model, [list(ids(p)) for p in problems], int(m.layer)) if need_domain else None
    domain = domain_vectors(vec["keys"], vec["values"], queries, int(m.top_k)) if need_domain else None

    sampling = OmegaConf.to_container(cfg.llm.sampling, resolve=True)
    identity = {k: v for k, v in OmegaConf.to_container(cfg.llm, resolve=True).items() if k != "sampling"}
    table, metrics = [], {"benchmark": bench.name, "problems": len(problems), "probe_accuracy": info["probe_accuracy"],
                          "probe_accuracy_length_matched": info.get("probe_accuracy_length_matched")}
    for cond in m.conditions:
        cdir = out_dir / cond
        cdir.mkdir(parents=True, exist_ok=True)
        samples = cdir / "samples.jsonl"
        steer = {"condition": cond, "layer": int(m.layer), "other_layer": int(m.other_layer),
                 "strength": float(m.strength), "decode": bool(m.decode_injection), "top_k": int(m.top_k),
                 "instruction": m.instruction, "random_seed": int(m.random_seed), "vectors": info["vectors"]}
        key = sampling_key(identity | {"glore": steer}, sampling, sysp)
        done = read_samples(samples, key)
        todo = [(p, [i for i in range(int(ev.num_samples)) if (p.id, i) not in done]) for p in problems]
        todo = [(p, miss) for p, miss in todo if miss]
        where, first, last = condition_vectors(cond, vec, None, int(m.random_seed))
        layer = int(m.other_layer) if where == "other" else int(m.layer)
        steerer = Steerer(llm.model, layer, strength=float(m.strength), decode=bool(m.decode_injection))
        for i, p in enumerate(problems):
            _, f, la = condition_vectors(cond, vec, domain[i] if domain is not None else None, int(m.random_seed))
            if f is not None or la is not None:
                steerer.set(ids(p), first=f, last=la)
        log.info("GLoRE %s: %d problems x %d samples, %d to generate", cond, len(problems), ev.num_samples, len(todo))
        if todo:
            with steerer:
                generate_samples(
                    llm, todo, messages, sampling, chunk_size=int(ev.chunk_size), seed=int(cfg.seed), path=samples,
                    key=key, score=lambda text, p: {"extracted": extract_answer(text), "correct": verify(text, p.answer),
                                                    "reflections": reflection_count(text)})
            if steerer.vectors and steerer.misses:
                raise UserError(f"GLoRE {cond}: {steerer.misses} prompt rows found no vector (the prompt ids the "
                                f"backend generated from differ from glore.method.prompt_ids); nothing was steered there")
        rows = [r for r in read_samples(samples, key).values() if r["problem_id"] in by_id]
        for r in rows:  # rescore with the current checker and markers
            r["correct"] = verify(r["response"], by_id[r["problem_id"]].answer)
            r["reflections"] = reflection_count(r["response"])
        stats = condition_stats(rows)
        pp = pd.DataFrame(rows).groupby("problem_id").agg(
            accuracy=("correct", "mean"), tokens=("num_tokens", "mean"), reflections=("reflections", "mean"),
        ).reset_index()
        atomic_write_text(cdir / "per_problem.csv", pp.to_csv(index=False))
        table.append({"condition": cond} | {k: v for k, v in stats.items() if not k.endswith("_per_seed")})
        metrics |= {f"{cond}/{k}": v for k, v in stats.items()}

    def pm(row: dict[str, Any], k: str, scale: float = 1.0, nd: int = 2) -> str:
        return f"{scale * row[k]:.{nd}f} ± {scale * row[k + '_std']:.{nd}f}" if k in row else "-"

    lines = [f"# GLoRE on {bench.name}: {cfg.experiment_name}", "",
             f"{len(problems)} problems x {ev.num_samples} samples (one seed per sample index; mean ± std over "
             f"them); layer {m.layer}, strength {m.strength}, decode injection {m.decode_injection}; "
             f"probe accuracy (leave-one-problem-out, {info['demos']} problems) {info['probe_accuracy']:.3f}; "
             f"with the long CoT cut to the short one's length {info.get('probe_accuracy_length_matched', float('nan')):.3f}",
             "",
             "| condition | accuracy (%) | response tokens | reflection markers / 100 tokens | responses with a marker (%) |",
             "|---|---|---|---|---|"]
    for row in table:
        lines.append(f"| {row['condition']} | {pm(row, 'accuracy', 100, 1)} | {pm(row, 'tokens', 1, 1)} | "
                     f"{pm(row, 'reflection_per_100_tokens', 1, 3)} | {pm(row, 'reflective_share', 100, 1)} |")
    md = "\n".join(lines) + "\n"
    atomic_write_text(out_dir / "summary.md", md)
    print(md)
    return metrics
