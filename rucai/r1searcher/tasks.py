"""R1-Searcher tasks.

  r1searcher.pipeline  stage 1 -> stage 2 (starts from stage 1's saved policy) -> evaluation
  r1searcher.train     one stage (`method.stage=stage1|stage2`, `method.init_from=<run dir|HF folder>`)
  r1searcher.eval      evaluate `llm.model` (or `method.init_from`) with search / RAG / no retrieval

Outputs (run dir): `stage1/` and `stage2/` (`rewards.csv` per step and component, `rollouts.jsonl`,
`policy/`, `summary.json`), `eval/` (`results.csv|md`, `samples/<mode>_<set>.jsonl`), `csv/` (the
loggers), `metrics.json`. `debug=smoke` shrinks every stage (see `method.smoke`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rucai.errors import UserError
from rucai.registry import task

log = logging.getLogger(__name__)

_RL_KEYS = ("algo", "reward", "steps", "prompts_per_step", "n_samples", "lr", "weight_decay", "kl_coef", "clip_eps",
            "max_grad_norm", "micro_batch_size", "temperature", "top_p", "topk", "max_searches",
            "max_tokens_per_round", "max_response_tokens", "gradient_checkpointing")


def _method(cfg: DictConfig) -> dict[str, Any]:
    if cfg.get("method") is None:
        raise UserError("r1searcher tasks need a `method:` section: use experiment=r1searcher/smollm2")
    return OmegaConf.to_container(cfg.method, resolve=True)


def _check_backend(cfg: DictConfig) -> None:
    from rucai.runtime import hardware

    hardware.check(cfg.hardware)
    if (cfg.get("llm") or {}).get("backend") == "vllm":
        import torch

        if not torch.cuda.is_available():
            raise UserError("llm=vllm needs a CUDA GPU (none visible); use llm=hf or llm=smollm2 on CPU")


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
    """A random-init 2-layer Llama on `base`'s tokenizer, saved once (debug=smoke: the real code
    path at a size the CI can train in seconds)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = Path(cache_dir) / "r1searcher" / f"tiny_policy_h{hidden}_l{layers}"
    if (out / "config.json").is_file():
        return str(out)
    tok = AutoTokenizer.from_pretrained(base)
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


def build_retriever(m: dict, cfg: DictConfig) -> tuple[Any, Any]:
    """(retriever, server or None). service: inprocess | http (a local service for this run) | url."""
    from rucai.retrieval import load_retriever
    from rucai.retrieval.index import ensure_index

    r = m.get("retriever") or {}
    service = r.get("service", "inprocess")
    if service == "url":
        if not r.get("url"):
            raise UserError("method.retriever.service=url needs method.retriever.url=http://127.0.0.1:<port>")
        return load_retriever(r["url"]), None
    kinds = list(r.get("kinds") or ["bm25"])
    folder = ensure_index(r["index_dir"], r.get("source", "hotpotqa_contexts"), r["input"], kinds,
                          words=int(r.get("words", 100)), limit=r.get("limit"))
    local = load_retriever(folder, kind=r.get("kind") or kinds[0])
    if service == "inprocess":
        return local, None
    if service == "http":
        from rucai.retrieval.service import BackgroundServer, HTTPRetriever

        server = BackgroundServer(local, host=r.get("host", "127.0.0.1"), port=int(r.get("port", 0)))
        url = server.__enter__()
        log.info("retrieval service for this run: %s", url)
        return HTTPRetriever(url), server
    raise UserError(f"method.retriever.service={service!r}; valid: inprocess, http, url")


def _load_rows(data_dir: str, name: str) -> list[dict]:
    import json

    path = Path(data_dir) / "multihop_qa" / f"{name}.jsonl"
    if not path.is_file():
        raise UserError(f"{path} not found: set RUCAI_DATA_DIR to the folder holding multihop_qa/")
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def _stage_cfg(m: dict, stage: str, smoke: bool, seed: int) -> Any:
    from rucai.r1searcher.rl import RLConfig

    s = dict(m.get(stage) or {})
    kw = {k: s[k] for k in _RL_KEYS if k in s}
    if smoke:
        sm = m.get("smoke") or {}
        for k in ("steps", "prompts_per_step", "n_samples", "max_tokens_per_round", "max_searches"):
            if k in sm:
                kw[k] = min(int(sm[k]), int(kw.get(k, sm[k])))
        kw["max_response_tokens"] = int(sm.get("max_response_tokens", 64))
    from rucai.r1searcher.prompts import PROMPT_STYLES

    style = m.get("prompt_style", "chat")
    if style not in PROMPT_STYLES:
        raise UserError(f"method.prompt_style={style!r}; valid: {', '.join(PROMPT_STYLES)}")
    return RLConfig(prompt_style=style, seed=seed, **kw)


def _loggers(cfg: DictConfig) -> list:
    from rucai.tasks import _instantiate_all

    return _instantiate_all(cfg.logger)


def run_stage(cfg: DictConfig, m: dict, stage: str, init_from: str, retriever: Any, out: Path,
              loggers: list) -> dict:
    from rucai.r1searcher.rl import train_stage

    rl_cfg = _stage_cfg(m, stage, bool(cfg.smoke), int(cfg.seed))
    data = _load_rows(cfg.paths.data_dir, (m.get(stage) or {}).get("data", f"r1searcher_{stage}_train"))
    log.info("%s: %d training questions, %s", stage, len(data), rl_cfg)
    return train_stage(init_from, out / stage, data, retriever, rl_cfg, cfg.hardware, loggers, stage)


def run_eval(cfg: DictConfig, m: dict, model_path: str | None, retriever: Any, out: Path) -> dict:
    from rucai.llm import build as build_llm
    from rucai.r1searcher.evaluate import EVAL_SETS, MODES, evaluate
    from rucai.r1searcher.rollout import search_hf_llm

    e = dict(m.get("eval") or {})
    limit, max_tokens = e.get("limit"), int(e.get("max_tokens", 512))
    if cfg.smoke:
        sm = m.get("smoke") or {}
        limit = int(sm.get("eval_limit", 2))
        max_tokens = min(max_tokens, int(sm.get("eval_max_tokens", 24)))
        if sm.get("eval_sets"):
            e["sets"] = list(sm["eval_sets"])
    llm_cfg = OmegaConf.to_container(cfg.llm, resolve=True)
    if model_path:
        llm_cfg["model"] = model_path
    if llm_cfg.get("backend") == "hf":
        args = {k: v for k, v in llm_cfg.items() if k not in ("backend", "name")}
        args["model"] = policy_folder(args["model"], args.get("cache_dir"))
        llm = search_hf_llm(**args, hardware=cfg.hardware)
        tokenizer = llm.tokenizer
    else:
        llm = build_llm(llm_cfg, hardware=cfg.hardware)
        from transformers import AutoTokenizer

        tokenizer = getattr(llm, "tokenizer", None) or AutoTokenizer.from_pretrained(llm_cfg["model"])
    judge = None
    if e.get("judge") == "self":
        judge = llm
    elif isinstance(e.get("judge"), dict):
        judge = build_llm(e["judge"], hardware=cfg.hardware)
    metrics = evaluate(llm, tokenizer, retriever, cfg.paths.data_dir, out / "eval",
                       list(e.get("sets") or EVAL_SETS), list(e.get("modes") or MODES), limit,
                       style=m.get("prompt_style", "chat"), topk=int(e.get("topk", 5)),
                       max_rounds=int(e.get("max_rounds", 9)), max_tokens=max_tokens, judge_llm=judge)
    llm.close()
    return metrics


def _finish(cfg: DictConfig, out: Path, metrics: dict, name: str, t0: float) -> dict:
    from rucai.utils.io import atomic_write_json, atomic_write_text

    atomic_write_text(out / "config_resolved.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    metrics = {"experiment": cfg.experiment_name, "task": name, "status": "completed",
               "seconds": round(time.perf_counter() - t0, 1)} | metrics
    atomic_write_json(out / "metrics.json", metrics)
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
    t0 = time.perf_counter()
    _check_backend(cfg)
    m = _method(cfg)
    out = Path(cfg.paths.output_dir)
    retriever, server = build_retriever(m, cfg)
    loggers = _loggers(cfg)
    metrics: dict[str, Any] = {}
    try:
        init = policy_folder(m.get("init_from") or cfg.llm.model, cfg.llm.get("cache_dir"))
        if cfg.smoke and (m.get("smoke") or {}).get("tiny_policy", True):
            init = tiny_policy(init, cfg.paths.cache_dir)
        s1 = run_stage(cfg, m, "stage1", init, retriever, out, loggers)
        metrics |= _stage_metrics(s1, "stage1")
        s2 = run_stage(cfg, m, "stage2", s1["policy"], retriever, out, loggers)  # hand-off: stage 1's weights
        metrics |= _stage_metrics(s2, "stage2")
        metrics |= run_eval(cfg, m, s2["policy"], retriever, out)
    finally:
        if server is not None:
            server.__exit__()
    return _finish(cfg, out, metrics, "r1searcher.pipeline", t0)


@task("r1searcher.train")
def train(cfg: DictConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    _check_backend(cfg)
    m = _method(cfg)
    stage = m.get("stage", "stage1")
    if stage not in ("stage1", "stage2"):
        raise UserError(f"method.stage={stage!r}; valid: stage1, stage2")
    init = m.get("init_from")
    if stage == "stage2" and not init:
        raise UserError("method.stage=stage2 needs method.init_from=<stage-1 run dir> (its stage1/policy is loaded)")
    out = Path(cfg.paths.output_dir)
    retriever, server = build_retriever(m, cfg)
    try:
        src = policy_folder(init or cfg.llm.model, cfg.llm.get("cache_dir"))
        if init and stage == "stage2":
            p = Path(init).expanduser() / "stage1" / "policy"
            src = str(p) if (p / "config.json").is_file() else src
        elif cfg.smoke and (m.get("smoke") or {}).get("tiny_policy", True):
            src = tiny_policy(src, cfg.paths.cache_dir)
        s = run_stage(cfg, m, stage, src, retriever, out, _loggers(cfg))
    finally:
        if server is not None:
            server.__exit__()
    return _finish(cfg, out, _stage_metrics(s, stage) | {"policy": s["policy"]}, "r1searcher.train", t0)


@task("r1searcher.eval")
def evaluate_task(cfg: DictConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    _check_backend(cfg)
    m = _method(cfg)
    out = Path(cfg.paths.output_dir)
    retriever, server = build_retriever(m, cfg)
    try:
        init = m.get("init_from")
        metrics = run_eval(cfg, m, policy_folder(init) if init else None, retriever, out)
    finally:
        if server is not None:
            server.__exit__()
    return _finish(cfg, out, metrics, "r1searcher.eval", t0)
