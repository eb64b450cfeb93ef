"""EASY-EP on one GPU in < 3 minutes: score, prune to half (streamed), reload, throughput under a budget.

Self-contained (torch, transformers, accelerate, safetensors and rucai.easyep; no Hydra):
  python experiments/easyep/gpu_check.py                 # H100/H200: ~3.75B-param Qwen3-MoE-style model, bf16
  python experiments/easyep/gpu_check.py --cpu --tiny    # the same path on CPU with a tiny model

Steps: build a random-init Qwen3-MoE-style model in bf16 on the device; score its experts with
EASY-EP hooks on synthetic demonstrations; save it as a sharded safetensors checkpoint; prune to
half the experts with `rucai.easyep.prune_checkpoint` in a fresh process (its peak RSS recorded);
reload the pruned checkpoint; check its logits against mask mode on the full model; then measure
generation throughput (prompt + greedy decode, KV cache) for full and pruned
  (a) at the largest batch whose peak GPU memory fits one fixed budget (the paper's 2.99x setting:
      same memory, the pruned model spends the freed expert memory on a larger batch), and
  (b) at equal batch.
Prints ONE JSON line. On CPU, memory per batch is the analytic weights + KV-cache size (no
allocator statistics), so (a) there is arithmetic, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

SIZES = {
    # ~3.75B parameters (3.62B in experts), ~7.0 GiB in bf16
    "mid": dict(hidden=2048, layers=12, experts=64, top_k=8, moe_inter=768, heads=16, kv_heads=4),
    "tiny": dict(hidden=64, layers=2, experts=16, top_k=2, moe_inter=32, heads=4, kv_heads=2),
}


def build(size: dict, device: str, dtype: torch.dtype, seed: int = 0):
    from transformers import AutoModelForCausalLM, Qwen3MoeConfig

    from rucai.easyep.toy import BOS, PAD, VOCAB

    cfg = Qwen3MoeConfig(vocab_size=VOCAB, hidden_size=size["hidden"], num_hidden_layers=size["layers"],
                         num_attention_heads=size["heads"], num_key_value_heads=size["kv_heads"],
                         head_dim=size["hidden"] // size["heads"], num_experts=size["experts"],
                         num_experts_per_tok=size["top_k"], moe_intermediate_size=size["moe_inter"],
                         intermediate_size=4 * size["moe_inter"], norm_topk_prob=True, max_position_embeddings=4096,
                         pad_token_id=PAD, bos_token_id=BOS, eos_token_id=None, tie_word_embeddings=False)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.mlp.gate.weight.normal_(0, 0.5 / size["hidden"] ** 0.5 * 8)
    return model.eval()


def expert_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for layer in model.model.layers for p in layer.mlp.experts.parameters())


def weight_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def kv_bytes_per_token(model) -> int:
    c = model.config
    return c.num_hidden_layers * 2 * c.num_key_value_heads * c.head_dim * 2  # bf16 K and V


def sync(device: str) -> None:
    if device != "cpu":
        torch.cuda.synchronize()


@torch.no_grad()
def run_generate(model, batch: int, prompt: int, new: int, device: str) -> float:
    g = torch.Generator().manual_seed(batch)
    ids = torch.randint(0, 256, (batch, prompt), generator=g).to(device)
    mask = torch.ones_like(ids)
    sync(device)
    t0 = time.perf_counter()
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                         pad_token_id=257)
    sync(device)
    assert out.shape[1] == prompt + new
    return time.perf_counter() - t0


def peak_memory(model, batch: int, prompt: int, new: int, device: str) -> float | None:
    """Peak bytes for one generate at `batch` (GPU: measured; CPU: weights + KV arithmetic); None on OOM."""
    if device == "cpu":
        return weight_bytes(model) + batch * (prompt + new) * kv_bytes_per_token(model)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    # other tensors resident on the GPU (the other model of the comparison) are not this model's
    others = torch.cuda.memory_allocated() - weight_bytes(model)
    try:
        run_generate(model, batch, prompt, 4, device)
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        return None
    # the probe decodes 4 tokens; add the KV cache of the remaining ones
    return torch.cuda.max_memory_allocated() - others + batch * (new - 4) * kv_bytes_per_token(model)


def max_batch(model, budget: float, prompt: int, new: int, device: str, start: int, limit: int) -> tuple[int, float]:
    best, best_mem, b = 0, 0.0, start
    while b <= limit:
        m = peak_memory(model, b, prompt, new, device)
        if m is None or m > budget:
            break
        best, best_mem = b, m
        b *= 2
    if best and best * 3 // 2 <= limit:  # one refinement step between the last two powers of two
        b = best * 3 // 2
        m = peak_memory(model, b, prompt, new, device)
        if m is not None and m <= budget:
            best, best_mem = b, m
    return best, best_mem


def throughput(model, batch: int, prompt: int, new: int, device: str) -> float:
    run_generate(model, min(batch, 8), prompt, 2, device)  # warm-up
    t = run_generate(model, batch, prompt, new, device)
    return batch * new / t


RES: dict = {}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpu", action="store_true")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--budget-extra-gib", type=float, default=None,
                    help="memory budget = full model weights + this (default: 6 GiB on GPU, 1 MiB tiny)")
    ap.add_argument("--prompt", type=int, default=None)
    ap.add_argument("--new", type=int, default=None)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    device = "cpu" if args.cpu or not torch.cuda.is_available() else "cuda"
    size = SIZES["tiny" if args.tiny else "mid"]
    dtype = torch.bfloat16
    prompt = args.prompt or (32 if args.tiny else 256)
    new = args.new or (16 if args.tiny else 64)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="easyep_gpu_"))
    res = RES
    res |= {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "size": size,
            "torch": torch.__version__}
    import transformers

    from rucai.easyep.bench import measure_prune_rss
    from rucai.easyep.prune import apply_expert_mask
    from rucai.easyep.scoring import score_texts
    from rucai.easyep.selection import keep_from_method
    from rucai.easyep.toy import ByteTokenizer

    res["transformers"] = transformers.__version__
    t0 = time.perf_counter()
    model = build(size, device, dtype)
    res["build_s"] = time.perf_counter() - t0

    # 1. EASY-EP scores on synthetic demonstrations (structured text so routing is not uniform)
    words = ["integral", "prime", "triangle", "sum", "the", "of", "x^2", "=", "\\frac{1}{2}", "proof"]
    g = torch.Generator().manual_seed(0)
    demos = [" ".join(words[i] for i in torch.randint(0, len(words), (200 if args.tiny else 900,), generator=g).tolist())
             for _ in range(8)]
    t0 = time.perf_counter()
    scores = score_texts(model, ByteTokenizer(), demos, batch_size=4, max_length=1024 if args.tiny else 4096,
                         chunk_tokens=4096 if args.tiny else 65536)
    sync(device)
    res["score_s"] = time.perf_counter() - t0
    res["demo_tokens"] = scores.num_tokens
    k = size["experts"] // 2
    keep = keep_from_method("easyep", scores, k)

    # 2. save sharded, prune in a fresh process (peak RSS), reload
    src, dst = work / "full", work / "half"
    t0 = time.perf_counter()
    model.save_pretrained(src, max_shard_size="1GB" if not args.tiny else "100KB")
    res["save_s"] = time.perf_counter() - t0
    prune = measure_prune_rss(src, dst, keep)
    shard_bytes = max(f.stat().st_size for f in src.glob("*.safetensors"))
    res["prune"] = {"seconds": prune["seconds"], "peak_rss_mb": prune["peak_kb"] / 1024,
                    "baseline_rss_mb": prune["baseline_kb"] / 1024, "largest_shard_mb": shard_bytes / 2**20,
                    "ckpt_mb": sum(f.stat().st_size for f in src.glob("*.safetensors")) / 2**20,
                    "shards_in": len(list(src.glob("*.safetensors"))), "shards_out": prune["shards_out"]}
    from rucai.runtime import load_causal_lm

    t0 = time.perf_counter()
    pruned = load_causal_lm(dst, None, dtype=dtype, device=device).eval()
    res["reload_s"] = time.perf_counter() - t0

    # 3. pruned checkpoint == mask mode on the full model (Qwen3-MoE renormalises its top-k)
    ids = torch.randint(0, 256, (2, 64), generator=g).to(device)
    with torch.no_grad():
        lp = pruned(ids).logits.float()
        h = apply_expert_mask(model, keep)
        lm = model(ids).logits.float()
        h.remove()
        lf = model(ids).logits.float()
    res["pruned_vs_mask_max_abs"] = float((lp - lm).abs().max())
    res["pruned_vs_full_max_abs"] = float((lp - lf).abs().max())
    res["argmax_agree_pruned_mask"] = float((lp.argmax(-1) == lm.argmax(-1)).float().mean())

    # 4. throughput under one memory budget, and at equal batch
    wf, wp = weight_bytes(model), weight_bytes(pruned)
    extra = args.budget_extra_gib if args.budget_extra_gib is not None else (0.5 / 1024 if args.tiny else 6.0)
    budget = wf + extra * 2**30
    res["memory"] = {"weights_full_gib": wf / 2**30, "weights_pruned_gib": wp / 2**30,
                     "experts_full_gib": expert_bytes(model) / 2**30, "experts_pruned_gib": expert_bytes(pruned) / 2**30,
                     "budget_gib": budget / 2**30, "kv_kib_per_token": kv_bytes_per_token(model) / 1024,
                     "measured": device != "cpu"}
    limit = 512 if args.tiny else 4096
    t0 = time.perf_counter()
    bf, mf = max_batch(model, budget, prompt, new, device, start=1 if args.tiny else 16, limit=limit)
    bp, mp = max_batch(pruned, budget, prompt, new, device, start=1 if args.tiny else 16, limit=limit)
    res["probe_s"] = time.perf_counter() - t0
    if not bf:
        res["error"] = "full model does not fit the budget at the smallest batch"
    else:
        tf = throughput(model, bf, prompt, new, device)
        tp = throughput(pruned, bp, prompt, new, device)
        tp_eq = throughput(pruned, bf, prompt, new, device)
        res["budget_setting"] = {"prompt": prompt, "new_tokens": new, "batch_full": bf, "batch_pruned": bp,
                                 "peak_gib_full": mf / 2**30, "peak_gib_pruned": mp / 2**30,
                                 "tokens_per_s_full": tf, "tokens_per_s_pruned": tp, "throughput_ratio": tp / tf}
        res["equal_batch"] = {"batch": bf, "tokens_per_s_full": tf, "tokens_per_s_pruned": tp_eq,
                              "throughput_ratio": tp_eq / tf}
    res["total_s"] = sum(v for k2, v in res.items() if k2.endswith("_s") and isinstance(v, float)) + prune["seconds"]
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(res))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        main()
    except Exception as e:  # still one JSON line: what finished, and where it failed
        import traceback

        RES["error"] = f"{type(e).__name__}: {e}"[:500]
        RES["traceback_tail"] = traceback.format_exc().splitlines()[-6:]
        print(json.dumps(RES, default=str))
        sys.exit(1)
