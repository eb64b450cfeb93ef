"""EASY-EP tasks: `easyep.score`, `easyep.prune`, `easyep.specialise`, `easyep.bench_rss`.

All settings live under `method` (see experiments/easyep/*.yaml). Heavy imports stay inside the
functions (task discovery imports this module on every CLI start).
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


def _finish(cfg: DictConfig, metrics: dict[str, Any]) -> dict[str, Any]:
    """metrics.json (atomic) in the run directory, as every rucai task writes it."""
    from rucai.utils.io import atomic_write_json

    metrics = {"experiment": cfg.experiment_name, "task": cfg.task, "status": "completed"} | metrics
    atomic_write_json(Path(cfg.paths.output_dir) / "metrics.json", metrics)
    return metrics


def _m(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg.method, resolve=True) if cfg.get("method") else {}


def _gpu_gate(cfg: DictConfig, m: dict[str, Any]) -> None:
    from rucai.runtime import hardware

    hardware.check(cfg.hardware)
    if m.get("needs_gpu"):
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"experiment {cfg.experiment_name} needs a CUDA GPU (a model this size cannot be "
                            "scored on CPU); run it on a GPU node, or try experiment=easyep/tiny_dsv3")


def load_model(mcfg: dict[str, Any], sharding: dict[str, Any] | None, smoke: bool = False):
    """(model, tokenizer) from `method.model`: {path: HF dir} or {random_init: {family: ..., ...}}."""
    import torch

    if mcfg.get("random_init"):
        from rucai.easyep.toy import ByteTokenizer, tiny_model

        ri = dict(mcfg["random_init"])
        fam = ri.pop("family")
        seed = ri.pop("seed", 0)
        return tiny_model(fam, seed=seed, **ri), ByteTokenizer()
    path = mcfg.get("path")
    if not path:
        raise UserError("set method.model.path (a Hugging Face checkpoint folder) or method.model.random_init")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = getattr(torch, mcfg.get("dtype", "bfloat16")) if mcfg.get("dtype", "bfloat16") != "auto" else "auto"
    kw: dict[str, Any] = {"dtype": dtype, "trust_remote_code": bool(mcfg.get("trust_remote_code", False))}
    if sharding and sharding.get("device_map"):
        kw["device_map"] = sharding["device_map"]
        if sharding.get("max_memory"):
            kw["max_memory"] = {(int(k) if str(k).isdigit() else k): v for k, v in sharding["max_memory"].items()}
        if sharding.get("offload_folder"):
            kw["offload_folder"] = sharding["offload_folder"]
    elif torch.cuda.is_available():
        kw["device_map"] = "cuda:0"
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kw)
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=kw["trust_remote_code"])
    except OSError as e:
        raise UserError(f"cannot load {path}: {str(e).splitlines()[0]}") from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    return model.eval(), tok


def _domains(cfg: DictConfig, m: dict[str, Any]) -> dict[str, Any]:
    from hydra.utils import instantiate

    if m.get("domains"):
        return {name: instantiate(d, _convert_="all") for name, d in m["domains"].items()}
    if not cfg.get("data"):
        raise UserError("set data=pruning/easyep_<name> (demonstrations) or method.domains")
    src = instantiate(cfg.data, _convert_="all")
    return {getattr(src, "name", "demos"): src}


def _texts(src: Any) -> list[str]:
    if hasattr(src, "texts"):
        return src.texts()
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

    m = _m(cfg)
    _gpu_gate(cfg, m)
    out = Path(cfg.paths.output_dir)
    t0 = time.perf_counter()
    torch.manual_seed(int(cfg.seed))
    hw = cfg.hardware
    sharding = m.get("sharding") or (
        {"device_map": hw.device_map, "max_memory": hw.max_memory, "offload_folder": hw.offload_folder}
        if hw.get("device_map") else None)
    model, tok = load_model(m.get("model", {}), sharding, bool(cfg.smoke))
    n_demos = m.get("n_demos", 25)
    max_len = int(m.get("max_length", 4096))
    if cfg.smoke:
        n_demos, max_len = min(int(n_demos or 4), 4), min(max_len, 256)
    per_domain: dict[str, Scores] = {}
    for name, src in _domains(cfg, m).items():
        demos = select_demos(_texts(src), n=n_demos, rule=m.get("demo_rule", "longest"), seed=int(cfg.seed))
        s = score_texts(model, tok, demos, batch_size=int(m.get("batch_size", 4)), max_length=max_len, log_every=5)
        per_domain[name] = s
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
    k = int(m["keep"]) if m.get("keep") else max(1, round(E * float(m.get("keep_fraction", 0.5))))
    selection = m.get("selection", "easyep")
    keeps = {meth: keep_from_method(meth, combined, k, seed=int(cfg.seed)) for meth in ("easyep", "frequency", "gate", "random")}
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
                               **{f"overlap/{a}": v for a, v in overlap.items()}}
    if m.get("prune"):
        metrics |= _prune_model_dir(cfg, m, model, out / "mask.json", out)
    metrics["seconds"] = time.perf_counter() - t0
    return _finish(cfg, metrics)


def _prune_model_dir(cfg: DictConfig, m: dict[str, Any], model: Any, mask: Path, out: Path) -> dict[str, Any]:
    """Prune the scored model: its checkpoint folder, or (random-init) a sharded save of it; reload and generate."""
    import torch
    from transformers import AutoModelForCausalLM

    from rucai.easyep.prune import prune_checkpoint

    src = m.get("model", {}).get("path")
    random_init = not src
    if random_init:
        src = out / "model"
        model.save_pretrained(src, max_shard_size=m.get("save_shard_size", "200KB"))
    dst = Path(m.get("dst") or out / "pruned")
    summary = prune_checkpoint(src, dst, mask, overwrite=True)
    res = {"pruned/shards": summary["shards_out"], "pruned/bytes": summary["bytes_out"],
           "pruned/num_experts": summary["num_experts_after"], "pruned/dir": str(dst)}
    if random_init:  # small enough to reload here: check it loads and generates
        pruned = AutoModelForCausalLM.from_pretrained(dst).eval()
        ids = torch.tensor([[256, 84, 104, 101, 32]])
        gen = pruned.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=257)
        res["pruned/generated_tokens"] = int(gen.shape[1] - ids.shape[1])
    return res


@task("easyep.prune")
def prune(cfg: DictConfig) -> dict[str, Any]:
    """Streamed pruning of `method.src` with `method.keep` (a mask JSON) into `method.dst`."""
    from rucai.easyep.prune import prune_checkpoint

    m = _m(cfg)
    out = Path(cfg.paths.output_dir)
    src, keep = m.get("src"), m.get("keep")
    if cfg.smoke and not (src and Path(src).is_dir()):
        # no 671B checkpoint on a smoke run: prune a tiny random DeepSeek-V3 checkpoint the same way
        from rucai.easyep.selection import random_keep
        from rucai.easyep.toy import tiny_model

        log.info("smoke: %s not found; pruning a tiny random DeepSeek-V3 checkpoint instead", src)
        model = tiny_model("deepseek_v3", layers=2, experts=8, top_k=2)
        src = out / "smoke_src"
        model.save_pretrained(src, max_shard_size="100KB")
        keep = random_keep([1, 2], 8, 4, seed=int(cfg.seed))
    if not src or not Path(src).is_dir():
        raise UserError(f"method.src={src} is not a checkpoint folder; set method.src=/path/to/model")
    if keep is None:
        raise UserError("set method.keep=<mask.json from easyep.score>")
    dst = Path(m.get("dst") or out / "pruned")
    t0 = time.perf_counter()
    summary = prune_checkpoint(src, dst, keep, first_layer=m.get("first_layer"), overwrite=bool(m.get("overwrite", False)))
    return _finish(cfg, {"num_experts_before": summary["num_experts_before"], "num_experts_after": summary["num_experts_after"],
            "shards_out": summary["shards_out"], "bytes_out": summary["bytes_out"], "dst": str(dst),
            "seconds": time.perf_counter() - t0})


@task("easyep.specialise")
def specialise(cfg: DictConfig) -> dict[str, Any]:
    """CPU test of the method: train a small MoE on real-text domains, prune to half with each selection."""
    from rucai.easyep.toy import results_table, specialisation_run
    from rucai.utils.io import atomic_write_json, atomic_write_text

    m = _m(cfg)
    out = Path(cfg.paths.output_dir)
    params = dict(m.get("run", {}))
    if cfg.smoke:
        params |= dict(m.get("smoke", {}))
    threads = params.pop("threads", None)
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
    return _finish(cfg, {f"{name}/{t}_loss": r[name][t]["loss"] for name in ("full", "easyep", "frequency", "gate", "random_mean")} | {
        f"{name}/{t}_agreement": r[name][t]["agreement"] for name in ("easyep", "frequency", "gate", "random_mean")} | {
        "expert_bytes_ratio": b["expert_bytes_ratio"], "throughput_ratio": b["throughput_ratio"],
        "train_loss_last": summary["train_loss_last"], "seconds": summary["total_seconds"]})


@task("easyep.bench_rss")
def bench_rss(cfg: DictConfig) -> dict[str, Any]:
    """Peak RSS of streamed pruning vs the largest shard, for checkpoints of several sizes."""
    from rucai.easyep.bench import rss_benchmark
    from rucai.utils.io import atomic_write_json

    m = _m(cfg)
    sizes = m.get("smoke_sizes") if cfg.smoke else m.get("sizes")
    rows = rss_benchmark(Path(cfg.paths.output_dir) / "ckpts", sizes, shard_mb=float(m.get("shard_mb", 64)),
                         keep_checkpoints=bool(m.get("keep_checkpoints", False)))
    atomic_write_json(Path(cfg.paths.output_dir) / "rss.json", rows)
    out = {}
    for r in rows:
        tag = r["name"]
        out |= {f"{tag}/ckpt_mb": r["ckpt_mb"], f"{tag}/largest_shard_mb": r["largest_shard_mb"],
                f"{tag}/peak_rss_mb": r["peak_rss_mb"], f"{tag}/baseline_rss_mb": r["baseline_rss_mb"],
                f"{tag}/rss_over_shard": r["rss_over_shard"]}
    return _finish(cfg, out)
