"""Benchmarks: peak RSS of streamed pruning vs shard size, for checkpoints of several sizes.

`synth_checkpoint` writes a DeepSeek-V3-layout checkpoint (hub key names: per-expert
`mlp.experts.<j>.{gate,up,down}_proj.weight` in bf16, fp32 router and correction bias, MLA
attention, shared expert, one leading dense layer) shard by shard without building a model, so
its own memory stays at one shard. `measure_prune_rss` runs `prune_checkpoint` in a fresh Python
process and reads that process's peak RSS (`resource.getrusage(RUSAGE_SELF).ru_maxrss`) after
the imports (baseline) and after pruning.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any


def synth_checkpoint(path: str | Path, layers: int, hidden: int = 1024, moe_inter: int = 512, experts: int = 64,
                     top_k: int = 8, shard_mb: float = 64.0, vocab: int = 32000) -> dict[str, Any]:
    import torch
    from safetensors.torch import save_file
    from transformers import DeepseekV3Config

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    n_group = 8 if experts % 8 == 0 else 1
    cfg = DeepseekV3Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=4 * hidden, moe_intermediate_size=moe_inter,
                           num_hidden_layers=layers + 1, first_k_dense_replace=1, n_routed_experts=experts,
                           num_experts_per_tok=top_k, n_group=n_group, topk_group=min(4, n_group), n_shared_experts=1,
                           num_attention_heads=8, num_key_value_heads=8, q_lora_rank=hidden // 2, kv_lora_rank=hidden // 4,
                           qk_nope_head_dim=64, qk_rope_head_dim=32, v_head_dim=64)
    cfg.save_pretrained(path)
    bf = torch.bfloat16
    H, inter, heads = hidden, moe_inter, 8

    def layer_tensors(li: int):
        p = f"model.layers.{li}."
        yield p + "input_layernorm.weight", (H,), bf
        yield p + "post_attention_layernorm.weight", (H,), bf
        yield p + "self_attn.q_a_proj.weight", (H // 2, H), bf
        yield p + "self_attn.q_a_layernorm.weight", (H // 2,), bf
        yield p + "self_attn.q_b_proj.weight", (heads * 96, H // 2), bf
        yield p + "self_attn.kv_a_proj_with_mqa.weight", (H // 4 + 32, H), bf
        yield p + "self_attn.kv_a_layernorm.weight", (H // 4,), bf
        yield p + "self_attn.kv_b_proj.weight", (heads * 128, H // 4), bf
        yield p + "self_attn.o_proj.weight", (H, heads * 64), bf
        if li == 0:
            for n, s in (("gate_proj", (4 * H, H)), ("up_proj", (4 * H, H)), ("down_proj", (H, 4 * H))):
                yield p + f"mlp.{n}.weight", s, bf
            return
        yield p + "mlp.gate.weight", (experts, H), torch.float32
        yield p + "mlp.gate.e_score_correction_bias", (experts,), torch.float32
        for n, s in (("gate_proj", (inter, H)), ("up_proj", (inter, H)), ("down_proj", (H, inter))):
            yield p + f"mlp.shared_experts.{n}.weight", s, bf
        for j in range(experts):
            for n, s in (("gate_proj", (inter, H)), ("up_proj", (inter, H)), ("down_proj", (H, inter))):
                yield p + f"mlp.experts.{j}.{n}.weight", s, bf

    def all_tensors():
        yield "model.embed_tokens.weight", (vocab, H), bf
        for li in range(layers + 1):
            yield from layer_tensors(li)
        yield "model.norm.weight", (H,), bf
        yield "lm_head.weight", (vocab, H), bf

    limit = int(shard_mb * 2**20)
    shards: list[dict[str, Any]] = []
    cur: dict[str, Any] = {}
    cur_bytes = 0
    g = torch.Generator().manual_seed(0)

    def flush():
        nonlocal cur, cur_bytes
        if cur:
            name = f"shard-{len(shards):05d}.safetensors"
            save_file(cur, str(path / name), metadata={"format": "pt"})
            shards.append({"name": name, "keys": list(cur), "bytes": cur_bytes})
            cur, cur_bytes = {}, 0

    for key, shape, dt in all_tensors():
        t = torch.empty(shape, dtype=dt)
        t.view(-1)[:64] = torch.randn(min(64, t.numel()), generator=g).to(dt)  # content is irrelevant here
        nb = t.numel() * t.element_size()
        if cur and cur_bytes + nb > limit:
            flush()
        cur[key] = t
        cur_bytes += nb
    flush()
    n = len(shards)
    wm = {}
    for i, s in enumerate(shards):
        final = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        (path / s["name"]).rename(path / final)
        wm |= {k: final for k in s["keys"]}
    total = sum(s["bytes"] for s in shards)
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": wm}))
    (path / "tokenizer_config.json").write_text("{}\n")
    return {"shards": n, "bytes": total, "largest_shard_bytes": max(s["bytes"] for s in shards),
            "moe_layers": list(range(1, layers + 1)), "experts": experts}


_CHILD = r"""
import json, resource, sys, time
import torch, safetensors, safetensors.torch, transformers  # noqa: F401  (import cost is the baseline)
from rucai.easyep.prune import prune_checkpoint
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
src, dst, keep = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
t0 = time.perf_counter()
s = prune_checkpoint(src, dst, {int(k): v for k, v in keep.items()}, overwrite=True)
print(json.dumps({"baseline_kb": base, "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "seconds": time.perf_counter() - t0, "shards_out": s["shards_out"], "bytes_out": s["bytes_out"]}))
"""


def measure_prune_rss(src: str | Path, dst: str | Path, keep: dict[int, list[int]]) -> dict[str, Any]:
    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-c", _CHILD, str(src), str(dst), json.dumps(keep)], capture_output=True,
                       text=True, cwd=root, env=None)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-2000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def rss_benchmark(work: str | Path, sizes: list[dict[str, Any]], shard_mb: float = 64.0,
                  keep_checkpoints: bool = False) -> list[dict[str, Any]]:
    """For each size {name, layers, hidden?, moe_inter?, experts?}: synthesise, prune to half, measure."""
    work = Path(work)
    rows = []
    for size in sizes:
        size = dict(size)
        name = size.pop("name")
        src, dst = work / f"{name}_src", work / f"{name}_half"
        info = synth_checkpoint(src, shard_mb=shard_mb, **size)
        E = info["experts"]
        keep = {li: list(range(0, E, 2)) for li in info["moe_layers"]}
        res = measure_prune_rss(src, dst, keep)
        peak_mb, base_mb = res["peak_kb"] / 1024, res["baseline_kb"] / 1024
        shard = info["largest_shard_bytes"] / 2**20
        rows.append({"name": name, "layers": size.get("layers"), "ckpt_mb": info["bytes"] / 2**20, "shards": info["shards"],
                     "largest_shard_mb": shard, "baseline_rss_mb": base_mb, "peak_rss_mb": peak_mb,
                     "rss_over_shard": (peak_mb - base_mb) / shard, "prune_seconds": res["seconds"],
                     "out_mb": res["bytes_out"] / 2**20, "shards_out": res["shards_out"]})
        if not keep_checkpoints:
            shutil.rmtree(src, ignore_errors=True)
            shutil.rmtree(dst, ignore_errors=True)
    return rows
