"""GLoRE tasks (DRAFT on the glore-wip branch; not yet run end to end).

  glore.vectors   the style vector (long vs short CoT of the demonstrations), the domain memory
                  (keys/values of MATH test problems outside MATH-500), the probe; a stage
  glore.evaluate  generation on a math benchmark under each condition (none, style, domain, both,
                  random, style_other_layer): length, reflection markers, strict accuracy
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from rucai.errors import UserError
from rucai.registry import task

log = logging.getLogger(__name__)


def _settings(cfg: DictConfig) -> DictConfig:
    m = cfg.get("method")
    if m is None or "layer" not in m or "top_k" not in m:
        raise UserError("the glore tasks need method=glore (use an experiment=glore/... overlay)")
    return m


def _read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p} not found: see ../shared/README.md (or set paths.data_dir)")
    return [json.loads(ln) for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]


def _think(response: str) -> str:
    """The chain of thought of an R1 trace: the text inside <think> ... </think> (or all of it)."""
    body = response.split("<think>", 1)[-1]
    return body.split("</think>", 1)[0].strip()


def _short_cots(llm: Any, problems: list[str], max_tokens: int, cache: Path) -> list[str]:
    """The model's own vanilla CoT per problem (greedy), cached in a JSON-lines file (resumable)."""
    from rucai.eval.generation import append_rows
    from rucai.glore.method import prompt_messages
    from rucai.llm.base import SamplingParams

    done = {r["problem"]: r["cot"] for r in _read_jsonl(cache)} if cache.is_file() else {}
    todo = [p for p in problems if p not in done]
    sp = SamplingParams(temperature=0.0, max_tokens=int(max_tokens))
    for i in range(0, len(todo), 8):
        chunk = todo[i:i + 8]
        outs = llm.generate([prompt_messages(p) for p in chunk], sp)
        rows = [{"problem": p, "cot": o.text} for p, o in zip(chunk, outs, strict=True)]
        append_rows(cache, rows)
        done |= {r["problem"]: r["cot"] for r in rows}
    return [done[p] for p in problems]


@task("glore.vectors")
def vectors(cfg: DictConfig) -> dict[str, Any]:
    from rucai.runtime.stages import Stage

    m = _settings(cfg)

    def work(st) -> dict[str, Any]:
        import torch

        from rucai import llm as rllm
        from rucai.glore.method import probe_accuracy, prompt_ids, style_vector, truncate_cot
        from rucai.llm.steering import layer_states, save_vectors

        llm = rllm.build(cfg.llm, hardware=cfg.hardware)
        model, tok = llm.model, llm.tokenizer
        demos = _read_jsonl(m.long_cot)[: m.max_demos or None]
        problems = [d["problem"] for d in demos]
        long = [truncate_cot(tok, _think(d["response"]), int(m.max_cot_tokens)) for d in demos]
        short = _short_cots(llm, problems, int(m.short_cot_tokens), st.dir / "demo_short_cots.jsonl")
        h_long = layer_states(model, [prompt_ids(tok, p, c) for p, c in zip(problems, long, strict=True)], int(m.layer))
        h_short = layer_states(model, [prompt_ids(tok, p, c) for p, c in zip(problems, short, strict=True)], int(m.layer))
        x = torch.cat([h_long, h_short])
        y = torch.cat([torch.ones(len(h_long)), torch.zeros(len(h_short))])
        probe = probe_accuracy(x, y, list(range(len(problems))) * 2)
        other = style_vector(
            layer_states(model, [prompt_ids(tok, p, c) for p, c in zip(problems, long, strict=True)], int(m.other_layer)),
            layer_states(model, [prompt_ids(tok, p, c) for p, c in zip(problems, short, strict=True)], int(m.other_layer)))
        excl = {r["problem"] for r in _read_jsonl(m.exclude_source)}
        mem = [r["problem"] for r in _read_jsonl(m.memory_source) if r["problem"] not in excl][: int(m.memory_size)]
        mem_short = _short_cots(llm, mem, int(m.short_cot_tokens), st.dir / "memory_short_cots.jsonl")
        keys = layer_states(model, [prompt_ids(tok, p) for p in mem], int(m.layer))
        values = layer_states(model, [prompt_ids(tok, p, c) for p, c in zip(mem, mem_short, strict=True)], int(m.layer))
        path = save_vectors(st.dir / "vectors.safetensors",
                            {"style": style_vector(h_long, h_short), "style_other_layer": other,
                             "keys": keys, "values": values},
                            {"layer": m.layer, "other_layer": m.other_layer})
        return {"vectors": str(path), "demos": len(problems), "memory": len(mem), "probe_accuracy": probe}

    return Stage(cfg, "vectors", dir=m.vectors_dir).run(work)
