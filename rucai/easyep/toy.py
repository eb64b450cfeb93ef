"""Tiny MoE models, a byte tokenizer and real-text domains for CPU tests of EASY-EP.

Random experts are interchangeable, so ranking them proves nothing: `specialisation_run` first
trains a small MoE on a mixture of distinguishable real-text domains (math problems with
solutions, multi-hop QA questions, Office product titles/descriptions from /work/shared/data),
so that experts specialise; then it scores experts with demonstrations of one domain, prunes to
half with each selection method through the real streamed `prune_checkpoint`, reloads the pruned
checkpoints with `rucai.runtime.load_causal_lm`, and measures held-out loss and next-token agreement with
the full model on every domain.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Any

import torch

from rucai.errors import UserError

log = logging.getLogger(__name__)

BOS, PAD, VOCAB = 256, 257, 258


class ByteTokenizer:
    """UTF-8 bytes -> ids 0..255, BOS 256, PAD 257; right padding. Enough for tiny models."""

    pad_token_id = PAD
    bos_token_id = BOS
    eos_token_id = None
    vocab_size = VOCAB

    def encode(self, text: str) -> list[int]:
        return [BOS] + list(text.encode("utf-8"))

    def __call__(self, texts: list[str] | str, return_tensors: str = "pt", padding: bool = True,
                 truncation: bool = True, max_length: int | None = None) -> dict[str, torch.Tensor]:
        if isinstance(texts, str):
            texts = [texts]
        seqs = [self.encode(t) for t in texts]
        if truncation and max_length:
            seqs = [s[:max_length] for s in seqs]
        n = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), n), PAD, dtype=torch.long)
        mask = torch.zeros((len(seqs), n), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


# --------------------------------------------------------------------------------------------
# tiny configs, one per family


def tiny_config(family: str, hidden: int = 64, layers: int = 2, experts: int = 16, top_k: int = 2,
                moe_inter: int = 64, vocab: int = VOCAB, **overrides: Any):
    """A small random-init config of `family` (deepseek_v3, qwen3_moe, qwen2_moe, mixtral, olmoe)."""
    from transformers import AutoConfig

    heads = max(2, hidden // 32)
    common = dict(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                  num_key_value_heads=heads, num_experts_per_tok=top_k, max_position_embeddings=4096,
                  pad_token_id=PAD, bos_token_id=BOS, eos_token_id=None, tie_word_embeddings=False)
    if family == "deepseek_v3":
        kw = dict(n_routed_experts=experts, moe_intermediate_size=moe_inter, intermediate_size=2 * moe_inter,
                  n_shared_experts=1, first_k_dense_replace=1, n_group=1, topk_group=1, q_lora_rank=None,
                  kv_lora_rank=hidden // 2, qk_nope_head_dim=16, qk_rope_head_dim=16, v_head_dim=16,
                  routed_scaling_factor=2.5, norm_topk_prob=True)
        common["num_hidden_layers"] = layers + 1  # one leading dense layer, as in DeepSeek
    elif family in ("qwen3_moe", "qwen2_moe", "olmoe"):
        kw = dict(num_experts=experts, moe_intermediate_size=moe_inter, intermediate_size=2 * moe_inter,
                  norm_topk_prob=family == "qwen3_moe", output_router_logits=False, router_aux_loss_coef=0.01)
        if family == "qwen2_moe":
            kw["shared_expert_intermediate_size"] = moe_inter
        if family == "qwen3_moe":
            kw["head_dim"] = hidden // heads
    elif family == "mixtral":
        kw = dict(num_local_experts=experts, intermediate_size=moe_inter, router_aux_loss_coef=0.01)
    else:
        raise UserError(f"unknown family {family!r}; use deepseek_v3, qwen3_moe, qwen2_moe, mixtral or olmoe")
    kw |= overrides
    common |= {k: kw.pop(k) for k in list(kw) if k in common}  # e.g. a real tokenizer's vocab / pad id
    return AutoConfig.for_model(family, **common, **kw)


def tiny_model(family: str, seed: int = 0, **kw: Any):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, **kw))
    # random routers: give them some spread so routing is not near-uniform
    for block in _blocks(model):
        with torch.no_grad():
            block.gate.weight.normal_(0, 0.5)
            if hasattr(block.gate, "e_score_correction_bias"):
                block.gate.e_score_correction_bias.normal_(0, 0.05)
    return model.eval()


def _blocks(model):
    from rucai.easyep.adapters import for_model

    return for_model(model).moe_blocks(model).values()


# --------------------------------------------------------------------------------------------
# real-text domains


def load_domains(data_dir: str | Path, per_domain: int = 2000, seed: int = 0) -> dict[str, list[str]]:
    """{"math": MATH problems + solutions, "qa": multi-hop questions + answers, "office": product text}."""
    d = Path(data_dir)
    paths = {"math": d / "math" / "math_test.jsonl", "qa": d / "multihop_qa" / "r1searcher_stage2_train.jsonl",
             "office": d / "amazon18_office" / "Office_Products.item.json"}
    for p in paths.values():
        if not p.is_file():
            raise UserError(f"{p} not found; point paths.data_dir (RUCAI_DATA_DIR) at the shared data folder")
    rows = lambda p: [json.loads(x) for x in p.read_text(encoding="utf-8").splitlines() if x.strip()]  # noqa: E731
    math_t = [f"Problem: {r['problem']}\nSolution: {r['solution']}" for r in rows(paths["math"])]
    qa_t = [f"Question: {r['question']}\nAnswer: {r['answer']}" for r in rows(paths["qa"])]
    items = json.loads(paths["office"].read_text(encoding="utf-8"))
    office_t = [f"Product: {v.get('title', '')}. Brand: {v.get('brand', '')}. {v.get('description', '')}"
                for v in items.values() if v.get("title")]
    out = {}
    for name, texts in (("math", math_t), ("qa", qa_t), ("office", office_t)):
        texts = [t for t in texts if len(t) > 40]
        random.Random(seed).shuffle(texts)
        out[name] = texts[:per_domain]
    return out


def split_domain(texts: list[str], n_demo_pool: int, n_eval: int) -> tuple[list[str], list[str], list[str]]:
    """(train, demo pool, held-out eval): disjoint."""
    if len(texts) < n_demo_pool + n_eval + 10:
        raise UserError(f"domain has {len(texts)} texts; need more than {n_demo_pool + n_eval}")
    return texts[n_demo_pool + n_eval:], texts[:n_demo_pool], texts[n_demo_pool:n_demo_pool + n_eval]


def _crop_batch(tok: ByteTokenizer, texts: list[str], seq_len: int, rng: random.Random) -> dict[str, torch.Tensor]:
    seqs = []
    for t in texts:
        b = tok.encode(t)
        if len(b) > seq_len:
            s = rng.randrange(0, len(b) - seq_len + 1)
            b = b[s:s + seq_len]
        seqs.append(b)
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), PAD, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def train_mixture(model: Any, domains: dict[str, list[str]], steps: int, batch_size: int = 16, seq_len: int = 128,
                  lr: float = 3e-3, seed: int = 0, log_every: int = 50) -> list[float]:
    """Next-byte training on an equal mixture of domains (each batch mixes all of them)."""
    tok = ByteTokenizer()
    rng = random.Random(seed)
    torch.manual_seed(seed)
    model.train()
    aux = getattr(model.config, "router_aux_loss_coef", 0.0) and hasattr(model.config, "output_router_logits")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    names = sorted(domains)
    losses = []
    for step in range(steps):
        texts = [rng.choice(domains[names[i % len(names)]]) for i in range(batch_size)]
        batch = _crop_batch(tok, texts, seq_len, rng)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        kw = {"output_router_logits": True} if aux else {}
        out = model(**batch, labels=labels, use_cache=False, **kw)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(out.loss.detach()))
        if log_every and (step + 1) % log_every == 0:
            log.info("train step %d/%d loss %.3f", step + 1, steps, sum(losses[-log_every:]) / log_every)
    model.eval()
    return losses


@torch.no_grad()
def evaluate(model: Any, texts: list[str], seq_len: int = 128, batch_size: int = 16,
             reference: list[torch.Tensor] | None = None) -> dict[str, Any]:
    """Mean next-byte NLL (nats) on the first `seq_len` bytes of each text; with `reference`
    (the full model's argmax predictions per batch) also next-token agreement with it."""
    tok = ByteTokenizer()
    model.eval()
    tot_nll, tot_tok, agree = 0.0, 0, 0
    preds = []
    for i in range(0, len(texts), batch_size):
        enc = tok(texts[i:i + batch_size], max_length=seq_len)
        logits = model(**enc, use_cache=False).logits.float()
        tgt = enc["input_ids"][:, 1:]
        m = enc["attention_mask"][:, 1:].bool()
        lp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
        tot_nll -= float(lp[m].sum())
        tot_tok += int(m.sum())
        p = logits[:, :-1].argmax(-1)
        preds.append(p.masked_fill(~m, -1))
        if reference is not None:
            agree += int(((p == reference[i // batch_size]) & m).sum())
    out = {"loss": tot_nll / max(tot_tok, 1), "tokens": tot_tok, "preds": preds}
    if reference is not None:
        out["agreement"] = agree / max(tot_tok, 1)
    return out


def expert_param_bytes(model: Any) -> int:
    from rucai.easyep.adapters import for_model

    tot = 0
    for block in for_model(model).moe_blocks(model).values():
        tot += sum(p.numel() * p.element_size() for p in block.experts.parameters())
    return tot


@torch.no_grad()
def tokens_per_second(model: Any, batch_size: int, seq_len: int, repeats: int = 3, vocab: int = 256,
                      device: str = "cpu") -> float:
    """Prefill throughput: batch x seq_len tokens per forward, best of `repeats` after one warm-up."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (batch_size, seq_len), generator=g).to(device)
    model(input_ids=ids, use_cache=False)
    best = float("inf")
    for _ in range(repeats):
        if device != "cpu":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        model(input_ids=ids, use_cache=False)
        if device != "cpu":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return batch_size * seq_len / best


def specialisation_run(data_dir: str | Path, work_dir: str | Path, family: str = "qwen3_moe", hidden: int = 64,
                       layers: int = 2, experts: int = 16, top_k: int = 2, moe_inter: int = 64, steps: int = 200,
                       batch_size: int = 16, seq_len: int = 128, lr: float = 3e-3, target: str = "math",
                       n_demos: int = 25, demo_rule: str = "longest", keep: int | None = None, n_eval: int = 64,
                       random_seeds: int = 5, per_domain: int = 2000, seed: int = 0,
                       demo_max_length: int = 1024, bench_batch: int = 16) -> dict[str, Any]:
    """Train -> score on `target` demos -> prune to `keep` (default half) with every method -> evaluate."""
    from rucai.easyep.prune import prune_checkpoint
    from rucai.easyep.scoring import score_texts, select_demos
    from rucai.easyep.selection import keep_from_method, save_keep
    from rucai.runtime import load_causal_lm

    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    domains = load_domains(data_dir, per_domain=per_domain, seed=seed)
    if target not in domains:
        raise UserError(f"target domain {target!r} unknown; use one of {', '.join(domains)}")
    n_pool = max(n_demos * 4, 100)
    splits = {k: split_domain(v, n_pool, n_eval) for k, v in domains.items()}
    model = tiny_model(family, seed=seed, hidden=hidden, layers=layers, experts=experts, top_k=top_k, moe_inter=moe_inter)
    losses = train_mixture(model, {k: s[0] for k, s in splits.items()}, steps, batch_size, seq_len, lr, seed)
    t_train = time.perf_counter() - t0
    full_dir = work / "full"
    model.save_pretrained(full_dir, max_shard_size="2MB")
    tok = ByteTokenizer()
    demos = select_demos(splits[target][1], n=n_demos, rule=demo_rule, seed=seed)
    scores = score_texts(model, tok, demos, batch_size=4, max_length=demo_max_length)
    (work / "scores.json").write_text(json.dumps(scores.to_json()))
    k = keep or experts // 2

    full_eval = {d: evaluate(model, s[2], seq_len) for d, s in splits.items()}
    results: dict[str, Any] = {"full": {d: {"loss": e["loss"], "agreement": 1.0} for d, e in full_eval.items()}}
    keeps = {m: keep_from_method(m, scores, k) for m in ("easyep", "frequency", "gate")}
    keeps |= {f"random{s}": keep_from_method("random", scores, k, seed=s) for s in range(random_seeds)}
    bytes_full = expert_param_bytes(model)
    bench = {}
    for name, kp in keeps.items():
        dst = work / f"pruned_{name}"
        prune_checkpoint(full_dir, dst, kp, overwrite=True)
        pm = load_causal_lm(dst, None, dtype="float32", device="cpu").eval()  # fp32 as trained, on CPU
        results[name] = {}
        for d, s in splits.items():
            e = evaluate(pm, s[2], seq_len, reference=full_eval[d]["preds"])
            results[name][d] = {"loss": e["loss"], "agreement": e["agreement"]}
        if name == "easyep":
            save_keep(work / "keep_easyep.json", kp, experts)
            torch.set_num_threads(1)
            tps_full = tokens_per_second(model, bench_batch, seq_len)
            tps_pruned = tokens_per_second(pm, bench_batch, seq_len)
            tps_full2 = tokens_per_second(model, bench_batch, seq_len)
            bench = {"expert_bytes_full": bytes_full, "expert_bytes_pruned": expert_param_bytes(pm),
                     "tokens_per_s_full": max(tps_full, tps_full2), "tokens_per_s_pruned": tps_pruned,
                     "bench_batch": bench_batch, "bench_seq_len": seq_len, "threads": 1}
            bench["expert_bytes_ratio"] = bench["expert_bytes_pruned"] / bytes_full
            bench["throughput_ratio"] = tps_pruned / bench["tokens_per_s_full"]
        del pm
    rnd = [results[f"random{s}"] for s in range(random_seeds)]
    results["random_mean"] = {d: {m: sum(r[d][m] for r in rnd) / len(rnd) for m in ("loss", "agreement")}
                              for d in splits}
    # overlap of selected sets
    overlap = {m: sum(len(set(keeps["easyep"][li]) & set(keeps[m][li])) for li in scores.layers) / (k * len(scores.layers))
               for m in ("frequency", "gate", "random0")}
    summary = {
        "family": family, "experts": experts, "keep": k, "top_k": top_k, "layers": scores.layers, "target": target,
        "train_steps": steps, "train_loss_first": sum(losses[:10]) / 10, "train_loss_last": sum(losses[-10:]) / 10,
        "n_demos": len(demos), "demo_tokens": scores.num_tokens, "train_seconds": t_train,
        "total_seconds": time.perf_counter() - t0, "results": results, "bench": bench,
        "overlap_with_easyep": overlap,
    }
    return summary


def results_table(summary: dict[str, Any]) -> str:
    doms = list(summary["results"]["full"])
    tgt = summary["target"]
    doms = [tgt] + [d for d in doms if d != tgt]
    head = "| selection | " + " | ".join(f"{d} loss" for d in doms) + f" | {tgt} agreement |"
    lines = [head, "|" + "---|" * (len(doms) + 2)]
    for name in ("full", "easyep", "frequency", "gate", "random_mean"):
        r = summary["results"][name]
        lines.append(f"| {name} | " + " | ".join(f"{r[d]['loss']:.4f}" for d in doms) + f" | {r[tgt]['agreement']:.4f} |")
    return "\n".join(lines)
