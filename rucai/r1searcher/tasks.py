"""R1-Searcher tasks.

  r1searcher.pipeline  stage 1 -> stage 2 (starts from stage 1's saved policy) -> evaluation
  r1searcher.train     one stage (`method.stage=stage1|stage2`, `method.init_from=<run dir|HF folder>`)
  r1searcher.eval      evaluate `llm.model` (or `method.init_from`) with search / RAG / no retrieval

Each part runs as a `rucai.runtime.stages.Stage` of the run dir: `stage1/` and `stage2/`
(`rewards.csv` per step and component, `rollouts.jsonl`, `policy/`, `checkpoints/last.ckpt` while
the stage runs, `done.json`), `eval/` (`results.csv|md`, `samples/<mode>_<set>.jsonl`, `done.json`).
A rerun in the same dir reuses finished stages; `ckpt_path=last` continues an interrupted RL stage
from its last step checkpoint. Settings: `method.*` (`rucai/r1searcher/config.py`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rucai.errors import UserError
from rucai.registry import task

log = logging.getLogger(__name__)


def _method(cfg: DictConfig) -> Any:
    from rucai.r1searcher.config import check

    check(cfg.get("method"))
    return cfg.method


def _check_backend(cfg: DictConfig) -> None:
    from rucai.runtime import hardware

    hardware.check(cfg.hardware)
    from rucai.llm import check as check_llm

    check_llm(cfg.get("llm"), cfg.hardware)


def policy_folder(spec: str, cache_dir: str | None = None) -> str:
    """An alias / .gguf / HF folder / run dir -> an HF folder that `from_pretrained` can train."""
    from rucai.llm import models

    p = Path(str(spec)).expanduser()
    for cand in (p / "stage2" / "policy", p / "stage1" / "policy", p / "policy"):
        if (cand / "config.json").is_file():
            return str(cand)
    path, gguf = models.resolve(str(spec))
    if gguf:
        return str(models.gguf_to_hf(path, gguf, cache_dir=cache_dir))
    return path


def tiny_policy(base: str, cache_dir: str | Path, hidden: int = 32, layers: int = 2) -> str:
    """A random-init Llama on `base`'s tokenizer, saved once (`method.tiny_policy`, set by
    debug=smoke: the real code path at a size the CI can train in seconds)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from rucai import runtime

    out = Path(cache_dir) / "r1searcher" / f"tiny_policy_h{hidden}_l{layers}"
    if (out / "config.json").is_file():
        return str(out)
    tok = runtime.load_tokenizer(base)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=8192, tie_word_embeddings=True, pad_token_id=tok.pad_token_id,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
    from rucai.r1searcher.rl import save_policy

    out.parent.mkdir(parents=True, exist_ok=True)
    return str(save_policy(model, tok, out))


def build_retriever(cfg: DictConfig) -> tuple[Any, Any]:
    """(retriever, server or None) from `method.retriever`; service: inprocess | http (a local
    service for this run) | url."""
    from rucai.retrieval import load_retriever
    from rucai.retrieval.index import ensure_index

    r = cfg.method.retriever
    if r.service == "url":
        if not r.url:
            raise UserError("method.retriever.service=url needs method.retriever.url=http://127.0.0.1:<port>")
        return load_retriever(r.url), None
    kinds = list(r.kinds)
    folder = ensure_index(r.index_dir, r.source, r.input, kinds, words=int(r.words), limit=r.limit, encoder=r.encoder)
    local = load_retriever(folder, kind=r.kind)
    if r.service == "inprocess":
        return local, None
    from rucai.retrieval.service import BackgroundServer, HTTPRetriever

    server = BackgroundServer(local, host=r.host, port=int(r.port))
    url = server.__enter__()
    log.info("retrieval service for this run: %s", url)
    return HTTPRetriever(url), server


class Retrieval:
    """The run's retriever, built on first use (a rerun whose stages are all done builds none);
    the service it started stops on exit."""

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg, self._retriever, self._server = cfg, None, None

    def get(self) -> Any:
        if self._retriever is None:
            self._retriever, self._server = build_retriever(self.cfg)
        return self._retriever

    def __enter__(self) -> Retrieval:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._server is not None:
            self._server.__exit__()
            self._server = None


def _load_rows(data_dir: str, name: str, split: Any = None) -> list[dict]:
    """`multihop_qa/<name>.jsonl`, or a part of `method.split` (split_train | split_eval)."""
    from rucai.r1searcher.split import load_rows

    return load_rows(data_dir, name, split)


def initial_policy(cfg: DictConfig) -> str:
    """`method.init_from` (or `llm.model`) as an HF folder; `method.tiny_policy` swaps in a random
    tiny Llama on its tokenizer."""
    m = cfg.method
    init = policy_folder(m.init_from or cfg.llm.model, OmegaConf.select(cfg, "llm.cache_dir"))
    if m.tiny_policy is not None:
        init = tiny_policy(init, cfg.paths.cache_dir, int(m.tiny_policy.hidden), int(m.tiny_policy.layers))
    return init


def run_stage(cfg: DictConfig, stage: Any, init_from: str, retriever: Any, step_offset: int = 0) -> dict:
    """One RL stage (`stage.name`: stage1 | stage2) in `stage.dir`, resuming under ckpt_path=last."""
    from rucai import runtime
    from rucai.r1searcher.rl import train_stage

    s = cfg.method[stage.name]
    data = _load_rows(cfg.paths.data_dir, s.data, cfg.method.split)
    log.info("%s: %d training questions from %s, policy %s", stage.name, len(data), s.data, init_from)
    runtime.seed(cfg)

    def log_row(row: dict, step: int) -> None:  # one step axis over both stages of a run
        runtime.log_metrics(cfg, {f"{stage.name}/{k}": v for k, v in row.items()}, step + step_offset)

    return train_stage(init_from, stage.dir, data, retriever, s, hardware=cfg.hardware,
                       prompt_style=cfg.method.prompt_style, seed=int(cfg.seed), name=stage.name,
                       resume=stage.resume_checkpoint(), log_row=log_row)


def run_eval(cfg: DictConfig, stage: Any, model_path: str | None, retriever: Any, step: int = 0) -> dict:
    """Evaluate `model_path` (or `llm.model`) into `stage.dir`; every model and tokenizer of the hf
    backend loads through `rucai.runtime`."""
    from rucai import runtime
    from rucai.llm import build as build_llm
    from rucai.r1searcher.evaluate import evaluate
    from rucai.r1searcher.rollout import search_hf_llm

    m, e = cfg.method, cfg.method.eval
    llm_cfg = OmegaConf.to_container(cfg.llm, resolve=True)
    if model_path:
        llm_cfg["model"] = model_path
    if llm_cfg["backend"] == "hf":
        path = policy_folder(llm_cfg["model"], llm_cfg.get("cache_dir"))
        model = runtime.load_causal_lm(path, cfg.hardware, dtype=llm_cfg.get("dtype") or "auto",
                                       trust_remote_code=bool(llm_cfg.get("trust_remote_code")))
        tokenizer = runtime.load_tokenizer(llm_cfg.get("tokenizer") or path,
                                           trust_remote_code=bool(llm_cfg.get("trust_remote_code")))
        loaded = ("backend", "name", "model", "tokenizer", "gguf_file", "convert_gguf", "cache_dir", "dtype",
                  "trust_remote_code")
        llm = search_hf_llm(model=model, tokenizer=tokenizer, hardware=cfg.hardware,
                            **{k: v for k, v in llm_cfg.items() if k not in loaded})
    else:
        llm = build_llm(llm_cfg, hardware=cfg.hardware)
        tokenizer = getattr(llm, "tokenizer", None) or runtime.load_tokenizer(llm_cfg["model"])
    judge = None
    if e.judge == "self":
        judge = llm
    elif OmegaConf.is_dict(e.judge):
        judge = build_llm(OmegaConf.to_container(e.judge, resolve=True), hardware=cfg.hardware)
    try:
        metrics = evaluate(llm, tokenizer, retriever, cfg.paths.data_dir, stage.dir, list(e.sets), list(e.modes),
                           e.limit, style=m.prompt_style, topk=int(e.topk), max_rounds=int(e.max_rounds),
                           max_tokens=int(e.max_tokens), judge_llm=judge, normalization=e.normalization,
                           split=m.split)
    finally:
        llm.close()
    runtime.log_metrics(cfg, metrics, step)
    return metrics


def _stage_metrics(summary: dict, stage: str) -> dict:
    out = {}
    for when in ("first", "last"):
        for k, v in (summary.get(when) or {}).items():
            if isinstance(v, int | float) and (k.startswith("reward/") or k.startswith("searches/")):
                out[f"{stage}/{when}/{k}"] = v
    return out


@task("r1searcher.pipeline")
def pipeline(cfg: DictConfig) -> dict[str, Any]:
    from rucai.runtime.stages import Stage

    m = _method(cfg)
    _check_backend(cfg)
    steps1, steps2 = int(m.stage1.steps), int(m.stage2.steps)
    with Retrieval(cfg) as retrieval:
        s1 = Stage(cfg, "stage1").run(lambda st: run_stage(cfg, st, initial_policy(cfg), retrieval.get()))
        # the hand-off: stage 2 starts from stage 1's saved policy
        s2 = Stage(cfg, "stage2").run(lambda st: run_stage(cfg, st, s1["policy"], retrieval.get(), steps1))
        ev = Stage(cfg, "eval").run(lambda st: run_eval(cfg, st, s2["policy"], retrieval.get(), steps1 + steps2))
    return _stage_metrics(s1, "stage1") | _stage_metrics(s2, "stage2") | ev


@task("r1searcher.train")
def train(cfg: DictConfig) -> dict[str, Any]:
    from rucai.runtime.stages import Stage

    m = _method(cfg)
    _check_backend(cfg)
    if m.stage == "stage2" and not m.init_from:
        raise UserError("method.stage=stage2 needs method.init_from=<stage-1 run dir> (its stage1/policy is loaded)")

    def source() -> str:
        if m.stage == "stage2":
            p = Path(m.init_from).expanduser() / "stage1" / "policy"
            return str(p) if (p / "config.json").is_file() else policy_folder(m.init_from)
        return initial_policy(cfg)

    with Retrieval(cfg) as retrieval:
        s = Stage(cfg, m.stage).run(lambda st: run_stage(cfg, st, source(), retrieval.get()))
    return _stage_metrics(s, m.stage) | {"policy": s["policy"]}


@task("r1searcher.eval")
def evaluate_task(cfg: DictConfig) -> dict[str, Any]:
    from rucai.runtime.stages import Stage

    m = _method(cfg)
    _check_backend(cfg)
    with Retrieval(cfg) as retrieval:
        return Stage(cfg, "eval").run(
            lambda st: run_eval(cfg, st, policy_folder(m.init_from) if m.init_from else None, retrieval.get()))
