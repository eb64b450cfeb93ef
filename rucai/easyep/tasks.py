"""EASY-EP tasks: `easyep.score`, `easyep.prune`, `easyep.specialise`, `easyep.bench_rss`.

All settings live under `method` (typed in rucai/easyep/config.py, set by experiments/easyep/*.yaml;
smoke sizes in experiments/easyep/debug/smoke.yaml). Tasks return their metrics; the dispatcher writes
metrics.json. Heavy imports stay inside the functions (task discovery imports this module).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rucai.errors import UserError
from rucai.registry import task

log = logging.getLogger(__name__)


def _gpu_gate(cfg: DictConfig) -> None:
    from rucai.runtime import hardware

    hardware.check(cfg.hardware)
    if cfg.method.needs_gpu:
        hardware.require_cuda(cfg.experiment_name, "a model this size cannot be scored on CPU", "easyep/tiny_dsv3")


def placement(cfg: DictConfig) -> dict[str, Any]:
    """The hardware profile the scored model is loaded with: `hardware`, its device_map / max_memory /
    offload_folder replaced by `method.sharding`'s when that sets a device_map."""
    hw = OmegaConf.to_container(cfg.hardware, resolve=True)
    sh = cfg.method.sharding
    if sh.device_map:
        hw |= {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
               for k, v in ((k, sh.get(k)) for k in ("device_map", "max_memory", "offload_folder"))}
    return hw


def random_model(ri: Any):
    """A tiny random-init MoE from a `RandomInitConfig` node (options left null: the family's defaults)."""
    from rucai.easyep.toy import tiny_model

    kw = {k: v for k, v in (OmegaConf.to_container(ri, resolve=True) if OmegaConf.is_config(ri) else dict(ri)).items()
          if v is not None}
    return tiny_model(kw.pop("family"), seed=kw.pop("seed", 0), **kw)


def load_model(mcfg: Any, hardware: Any = None):
    """(model, tokenizer) from `method.model`: {path: HF dir} or {random_init: {family: ..., ...}};
    a checkpoint goes through `rucai.runtime.load_causal_lm` (the hardware profile's device_map,
    max_memory, offload_folder; else one GPU when the profile is not CPU and one is visible)."""
    import torch

    from rucai.llm.base import hw_get

    ri = mcfg.get("random_init")
    if ri is not None and ri.get("family"):
        from rucai.easyep.toy import ByteTokenizer

        if not mcfg.get("tokenizer"):
            return random_model(ri), ByteTokenizer()
        from rucai.easyep.data import resolve_tokenizer
        from rucai.runtime import load_tokenizer

        tok = load_tokenizer(resolve_tokenizer(mcfg.tokenizer))
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        tok.padding_side = "right"
        ri = OmegaConf.to_container(ri, resolve=True) if OmegaConf.is_config(ri) else dict(ri)
        # the random model's embedding covers the tokenizer's vocabulary (special tokens included)
        return random_model(ri | {"vocab": len(tok), "pad_token_id": tok.pad_token_id}), tok
    path = mcfg.get("path")
    if not path:
        raise UserError("set method.model.path (a Hugging Face checkpoint folder) or method.model.random_init")
    from rucai.runtime import load_causal_lm, load_tokenizer

    trust = bool(mcfg.get("trust_remote_code"))
    device = "cuda:0" if torch.cuda.is_available() and hw_get(hardware, "accelerator") != "cpu" else None
    model = load_causal_lm(path, hardware, dtype=mcfg.get("dtype"), device=device, trust_remote_code=trust)
    tok = load_tokenizer(path, trust_remote_code=trust)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    return model.eval(), tok


def _domains(cfg: DictConfig) -> dict[str, Any]:
    from hydra.utils import instantiate

    if cfg.method.domains:
        return {name: instantiate(d, _convert_="all") for name, d in cfg.method.domains.items()}
    if not cfg.get("data"):
        raise UserError("set data=pruning/easyep_<name> (demonstrations) or method.domains")
    src = instantiate(cfg.data, _convert_="all")
    return {getattr(src, "name", "demos"): src}


def token_count(tok: Any, text: str, add_special_tokens: bool | None = None) -> int:
    """Tokens of `text` (untruncated) as the scorer will tokenize it."""
    kw = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
    if hasattr(tok, "get_vocab"):  # a Hugging Face tokenizer
        return len(tok(text, **kw)["input_ids"])
    return len(tok.encode(text))


def _texts(src: Any, tokenizer: Any = None) -> list[str]:
    if hasattr(src, "texts"):
        return src.texts(tokenizer)
    if hasattr(src, "load"):  # a math benchmark: problem statements
        return [p.prompt() for p in src.load()]
    raise UserError(f"{type(src).__name__} gives no texts; use rucai.easyep.data.JsonlTexts")


@task("easyep.score")
def score(cfg: DictConfig) -> dict[str, Any]:
    """Score experts on demonstrations; write scores, keep-masks (EASY-EP and baselines), a heatmap;
    optionally prune the checkpoint right away (`method.prune: true`)."""
    import torch

    from rucai.easyep.plot import score_heatmap
    from rucai.easyep.scoring import Scores, score_texts, select_demos
    from rucai.easyep.selection import keep_from_method, mix_domains, save_keep
    from rucai.utils.io import atomic_write_json

    m = cfg.method
    _gpu_gate(cfg)
    out = Path(cfg.paths.output_dir)
    torch.manual_seed(int(cfg.seed))
    model, tok = load_model(m.model, placement(cfg))
    per_domain: dict[str, Scores] = {}
    length_checks: dict[str, Any] = {}
    for name, src in _domains(cfg).items():
        special = getattr(src, "add_special_tokens", None)
        texts = _texts(src, tok)
        demos = select_demos(texts, n=m.n_demos, rule=m.demo_rule, seed=int(cfg.seed),
                             length=lambda t, sp=special: token_count(tok, t, sp))
        pos = {t: i for i, t in enumerate(texts)}
        atomic_write_json(out / f"demos_{name}.json", [{"index": pos[t], "tokens": token_count(tok, t, special),
                                                         "scored_tokens": min(token_count(tok, t, special), int(m.max_length))}
                                                        for t in demos])
        s = score_texts(model, tok, demos, batch_size=int(m.batch_size), max_length=int(m.max_length), log_every=5,
                        add_special_tokens=special)
        per_domain[name] = s
        if hasattr(src, "length_check") and hasattr(tok, "get_vocab"):
            check = src.length_check(tok)
            if check:
                atomic_write_json(out / f"length_check_{name}.json", check)
                length_checks[name] = check
        atomic_write_json(out / f"scores_{name}.json", s.to_json())
        log.info("domain %s: %d demos, %d tokens scored", name, len(demos), s.num_tokens)
    first = next(iter(per_domain.values()))
    if len(per_domain) == 1:
        combined = first
    else:  # mixed domains: row-normalise each domain's matrix, then sum
        combined = Scores(first.layers, *(mix_domains([s.by_name(k) for s in per_domain.values()])
                                          for k in ("easyep", "frequency", "gate")),
                          sum(s.num_tokens for s in per_domain.values()))
    E = combined.easyep.shape[1]
    k = int(m.keep) if m.keep else max(1, round(E * float(m.keep_fraction)))
    selection = m.selection
    keeps = {meth: keep_from_method(meth, combined, k, seed=int(cfg.seed)) for meth in ("easyep", "frequency", "gate", "random")}
    if selection not in keeps:
        raise UserError(f"method.selection={selection!r}; valid: {', '.join(keeps)}")
    for meth, kp in keeps.items():
        save_keep(out / f"mask_{meth}.json", kp, E, method=meth, domains=list(per_domain))
    save_keep(out / "mask.json", keeps[selection], E, method=selection, domains=list(per_domain))
    atomic_write_json(out / "scores.json", combined.to_json())
    score_heatmap(combined.easyep, combined.layers, keeps[selection], out / "heatmap.png",
                  title=f"EASY-EP scores ({', '.join(per_domain)}); red: kept {k}/{E}")
    overlap = {meth: sum(len(set(keeps[selection][li]) & set(keeps[meth][li])) for li in combined.layers) / (k * len(combined.layers))
               for meth in keeps if meth != selection}
    metrics: dict[str, Any] = {"num_experts": E, "keep": k, "moe_layers": len(combined.layers), "selection": selection,
                               "demo_tokens": combined.num_tokens, "domains": list(per_domain),
                               **{f"overlap/{a}": v for a, v in overlap.items()},
                               **{f"length_check/{d}/{k}": v for d, c in length_checks.items() for k, v in c.items()}}
    if m.prune:
        metrics |= _prune_model_dir(cfg, model, out / "mask.json", out)
    return metrics


def _prune_model_dir(cfg: DictConfig, model: Any, mask: Path, out: Path) -> dict[str, Any]:
    """Prune the scored model: its checkpoint folder, or (random-init) a sharded save of it; reload and generate."""
    import torch

    from rucai.easyep.prune import prune_checkpoint
    from rucai.runtime import load_causal_lm

    m = cfg.method
    src = m.model.path
    random_init = not src
    if random_init:
        src = out / "model"
        model.save_pretrained(src, max_shard_size=m.save_shard_size)
    dst = Path(m.dst or out / "pruned")
    summary = prune_checkpoint(src, dst, mask, overwrite=True)
    res = {"pruned/shards": summary["shards_out"], "pruned/bytes": summary["bytes_out"],
           "pruned/num_experts": summary["num_experts_after"], "pruned/dir": str(dst)}
    if random_init:  # small enough to reload here (CPU, fp32 as saved): check it loads and generates
        pruned = load_causal_lm(dst, None, dtype="float32", device="cpu").eval()
        ids = torch.tensor([[256, 84, 104, 101, 32]])
        gen = pruned.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=257)
        res["pruned/generated_tokens"] = int(gen.shape[1] - ids.shape[1])
    return res


def _random_source(cfg: DictConfig, out: Path) -> tuple[Path, Any]:
    """`method.random_src`: a tiny random checkpoint saved in shards, and (when `method.keep` is
    null) a random `keep_fraction` of its experts per MoE layer."""
    from rucai.easyep.adapters import for_model
    from rucai.easyep.selection import random_keep

    m = cfg.method
    model = random_model(m.random_src)
    src = out / "random_src"
    model.save_pretrained(src, max_shard_size=m.save_shard_size)
    keep = m.keep
    if keep is None:
        adapter = for_model(model)
        E = adapter.num_experts(model.config)
        keep = random_keep(sorted(adapter.moe_blocks(model)), E, max(1, round(E * float(m.keep_fraction))),
                           seed=int(cfg.seed))
    log.info("method.src is null: pruning a tiny random %s checkpoint (%s)", m.random_src.family, src)
    return src, keep


@task("easyep.prune")
def prune(cfg: DictConfig) -> dict[str, Any]:
    """Streamed pruning of `method.src` with `method.keep` (a mask JSON) into `method.dst`
    (`method.src` null + `method.random_src.family`: a tiny random checkpoint instead)."""
    from rucai.easyep.prune import prune_checkpoint

    m = cfg.method
    out = Path(cfg.paths.output_dir)
    src, keep = m.src, m.keep
    if src is None and m.random_src.family:
        src, keep = _random_source(cfg, out)
    if not src or not Path(src).is_dir():
        raise UserError(f"method.src={src} is not a checkpoint folder; set method.src=/path/to/model")
    if keep is None:
        raise UserError("set method.keep=<mask.json from easyep.score>")
    if OmegaConf.is_config(keep):
        keep = OmegaConf.to_container(keep, resolve=True)
    dst = Path(m.dst or out / "pruned")
    summary = prune_checkpoint(src, dst, keep, first_layer=m.first_layer, overwrite=bool(m.overwrite))
    return {"num_experts_before": summary["num_experts_before"], "num_experts_after": summary["num_experts_after"],
            "shards_out": summary["shards_out"], "bytes_out": summary["bytes_out"], "dst": str(dst)}


@task("easyep.specialise")
def specialise(cfg: DictConfig) -> dict[str, Any]:
    """CPU test of the method: train a small MoE on real-text domains, prune to half with each selection."""
    from rucai.easyep.toy import results_table, specialisation_run
    from rucai.utils.io import atomic_write_json, atomic_write_text

    out = Path(cfg.paths.output_dir)
    params = OmegaConf.to_container(cfg.method.run, resolve=True)
    threads = params.pop("threads")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    summary = specialisation_run(cfg.paths.data_dir, out / "work", seed=int(cfg.seed), **params)
    atomic_write_json(out / "specialisation.json", summary)
    table = results_table(summary)
    atomic_write_text(out / "results.md", table + "\n")
    log.info("\n%s", table)
    r, t = summary["results"], summary["target"]
    b = summary["bench"]
    return {f"{name}/{t}_loss": r[name][t]["loss"] for name in ("full", "easyep", "frequency", "gate", "random_mean")} | {
        f"{name}/{t}_agreement": r[name][t]["agreement"] for name in ("easyep", "frequency", "gate", "random_mean")} | {
        "expert_bytes_ratio": b["expert_bytes_ratio"], "throughput_ratio": b["throughput_ratio"],
        "train_loss_last": summary["train_loss_last"], "train_seconds": summary["train_seconds"]}


@task("easyep.bench_rss")
def bench_rss(cfg: DictConfig) -> dict[str, Any]:
    """Peak RSS of streamed pruning vs the largest shard, for checkpoints of several sizes."""
    from rucai.easyep.bench import rss_benchmark
    from rucai.utils.io import atomic_write_json

    m = cfg.method
    sizes = OmegaConf.to_container(m.sizes, resolve=True)
    rows = rss_benchmark(Path(cfg.paths.output_dir) / "ckpts", sizes, shard_mb=float(m.shard_mb),
                         keep_checkpoints=bool(m.keep_checkpoints))
    atomic_write_json(Path(cfg.paths.output_dir) / "rss.json", rows)
    out = {}
    for r in rows:
        tag = r["name"]
        out |= {f"{tag}/ckpt_mb": r["ckpt_mb"], f"{tag}/largest_shard_mb": r["largest_shard_mb"],
                f"{tag}/peak_rss_mb": r["peak_rss_mb"], f"{tag}/baseline_rss_mb": r["baseline_rss_mb"],
                f"{tag}/rss_over_shard": r["rss_over_shard"]}
    return out
