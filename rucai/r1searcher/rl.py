"""Outcome-reward RL for search-interleaved rollouts: REINFORCE++ with baseline and GRPO-style
group-normalised advantages, masked token-level policy gradient, Lightning Fabric for devices and
strategies (CPU, one GPU, DeepSpeed ZeRO-2/3 from the `hardware` profile).

Per step: `prompts_per_step` questions x `n_samples` rollouts (temperature 1.0) with the current
policy -> rewards (per component) -> advantages -> one gradient update (on-policy, so the PPO ratio
is 1 and clipping is inactive; the loss is still written as the clipped surrogate) -> CSV/logger row.

  reinforce_pp_baseline  (Qwen recipe) A = r - mean(r of the prompt's samples); per-token return
                         with the KL penalty folded into the reward (k1, coefficient `kl_coef`);
                         advantages whitened over all loss tokens of the batch (OpenRLHF)
  grpo                   (Llama stage-1 recipe) A = (r - mean) / (std + 1e-6) within the prompt's
                         samples; KL (k3) to the reference as a loss term
"""

from __future__ import annotations

import logging
import math
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rucai.errors import UserError

log = logging.getLogger(__name__)

ALGOS = ("reinforce_pp_baseline", "grpo")


@dataclass
class RLConfig:
    algo: str = "reinforce_pp_baseline"
    reward: str = "paper_stage1"
    steps: int = 10
    prompts_per_step: int = 4
    n_samples: int = 16
    lr: float = 2e-6
    weight_decay: float = 0.0
    kl_coef: float = 0.0
    clip_eps: float = 0.2
    max_grad_norm: float = 1.0
    micro_batch_size: int = 4
    temperature: float = 1.0
    top_p: float = 1.0
    topk: int = 3
    max_searches: int = 8
    max_tokens_per_round: int = 512
    max_response_tokens: int | None = None
    prompt_style: str = "chat"
    seed: int = 42
    gradient_checkpointing: bool = False
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.algo not in ALGOS:
            raise UserError(f"method.algo={self.algo!r}; valid: {', '.join(ALGOS)}")
        for k in ("steps", "prompts_per_step", "n_samples", "micro_batch_size"):
            if int(getattr(self, k)) < 1:
                raise UserError(f"{k}={getattr(self, k)} must be >= 1")


def group_advantages(rewards: list[float], n: int, algo: str) -> list[float]:
    """Sequence-level advantages for rewards laid out prompt-major (`n` samples per prompt)."""
    if len(rewards) % n:
        raise ValueError(f"{len(rewards)} rewards are not a multiple of n={n}")
    out = []
    for g in range(0, len(rewards), n):
        grp = rewards[g:g + n]
        mean = sum(grp) / n
        if algo == "grpo":
            std = math.sqrt(sum((x - mean) ** 2 for x in grp) / max(n - 1, 1)) if n > 1 else 0.0
            out += [(x - mean) / (std + 1e-6) for x in grp]
        else:
            out += [x - mean for x in grp]
    return out


def token_advantages(seq_adv: list[float], masks: list[list[int]], algo: str,
                     kl: list[list[float]] | None = None, kl_coef: float = 0.0) -> list[list[float]]:
    """Per-token advantages. reinforce_pp_baseline: return-to-go of (-kl_coef * kl_t) plus the
    sequence advantage, then whitened over all mask-1 tokens; grpo: the sequence advantage."""
    out = []
    for i, (a, m) in enumerate(zip(seq_adv, masks, strict=True)):
        if algo == "reinforce_pp_baseline" and kl is not None and kl_coef > 0:
            ret, acc = [0.0] * len(m), 0.0
            for t in range(len(m) - 1, -1, -1):
                acc += -kl_coef * kl[i][t] * m[t]
                ret[t] = acc + a
            out.append(ret)
        else:
            out.append([a] * len(m))
    if algo == "reinforce_pp_baseline":
        vals = [v for row, m in zip(out, masks, strict=True) for v, k in zip(row, m, strict=True) if k]
        if len(vals) > 1:
            mu = sum(vals) / len(vals)
            sd = math.sqrt(sum((v - mu) ** 2 for v in vals) / (len(vals) - 1))
            out = [[(v - mu) / (sd + 1e-8) for v in row] for row in out]
    return out


def _fabric(hardware: Any, max_grad_norm: float | None = None) -> Any:
    """Fabric from the hardware profile (DeepSpeed / FSDP strategies mapped to Fabric's)."""
    import lightning as L

    strategy = hardware.strategy if hardware is not None else "auto"
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(strategy):
            strategy = OmegaConf.to_container(strategy, resolve=True)
    except ImportError:  # plain objects (scripts) need no omegaconf
        pass
    if isinstance(strategy, dict):
        target = str(strategy.pop("_target_", ""))
        if target.endswith("DeepSpeedStrategy"):
            from lightning.fabric.strategies import DeepSpeedStrategy

            keep = {k: v for k, v in strategy.items() if k in ("stage", "offload_optimizer", "offload_parameters")}
            strategy = DeepSpeedStrategy(**keep)
            if max_grad_norm:  # DeepSpeed clips inside its optimizer step
                strategy.config["gradient_clipping"] = float(max_grad_norm)
        elif target.endswith("FSDPStrategy"):
            strategy = "fsdp"
        else:
            strategy = "auto"
    acc = hardware.accelerator if hardware is not None else "cpu"
    devices = hardware.devices if hardware is not None else 1
    precision = hardware.precision if hardware is not None else "32-true"
    return L.Fabric(accelerator=acc, devices=devices, strategy=strategy, precision=precision)


def _logprobs(model: Any, input_ids: Any, attention: Any) -> Any:
    """log p(token_t | tokens_<t) for t >= 1: shape [B, T-1]."""
    import torch

    logits = model(input_ids=input_ids, attention_mask=attention).logits[:, :-1].float()
    return torch.log_softmax(logits, -1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)


def save_policy(model: Any, tokenizer: Any, out: Path) -> Path:
    """save_pretrained into a temp folder beside `out`, then rename (a crash leaves no half model)."""
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def train_stage(policy_path: str, out_dir: Path, data: list[dict], retriever: Any, cfg: RLConfig,
                hardware: Any = None, loggers: list | None = None, stage_name: str = "stage1") -> dict[str, Any]:
    """Train one stage from `policy_path` (an HF folder); save the policy to `out_dir/policy`.

    data: rows with `question` and `answer`. Writes `out_dir/rewards.csv` (one row per step, every
    reward component) and `out_dir/rollouts.jsonl` (every rollout with its reward)."""
    import json

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rucai.llm.base import SamplingParams
    from rucai.r1searcher.prompts import search_prompt
    from rucai.r1searcher.rewards import get_reward
    from rucai.r1searcher.rollout import SearchRolloutEngine, search_hf_llm, tokenize_rollout
    from rucai.utils.io import append_csv_row, atomic_write_json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    reward_fn = get_reward(cfg.reward)
    fabric = _fabric(hardware, cfg.max_grad_norm)
    deepspeed = type(fabric.strategy).__name__ == "DeepSpeedStrategy"
    fabric.launch()
    fabric.seed_everything(cfg.seed)
    tok = AutoTokenizer.from_pretrained(policy_path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    dtype = torch.bfloat16 if "bf16" in str(getattr(hardware, "precision", "")) else torch.float32
    model = AutoModelForCausalLM.from_pretrained(policy_path, dtype=dtype)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    ref = None
    if cfg.kl_coef > 0:
        ref = AutoModelForCausalLM.from_pretrained(policy_path, dtype=dtype).eval().requires_grad_(False)
        ref = fabric.to_device(ref)
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    model, optim = fabric.setup(model, optim)
    raw = model.module if hasattr(model, "module") else model
    llm = search_hf_llm(model=raw, tokenizer=tok, batch_size=max(cfg.micro_batch_size, 1) * 4,
                        device=str(fabric.device))
    tok.padding_side = "left"  # HFLLM's; training pads on the right explicitly below
    engine = SearchRolloutEngine(llm, retriever, topk=cfg.topk, max_searches=cfg.max_searches,
                                 max_tokens_per_round=cfg.max_tokens_per_round,
                                 max_response_tokens=cfg.max_response_tokens)
    rng = random.Random(cfg.seed)
    order: list[int] = []
    csv_path, samples_path = out_dir / "rewards.csv", out_dir / "rollouts.jsonl"
    history = []
    for step in range(1, cfg.steps + 1):
        t_step = time.perf_counter()
        if len(order) < cfg.prompts_per_step:
            perm = list(range(len(data)))
            rng.shuffle(perm)
            order += perm
        batch = [data[i] for i in order[:cfg.prompts_per_step]]
        del order[:cfg.prompts_per_step]
        questions = [r["question"] for r in batch for _ in range(cfg.n_samples)]
        golds = [r["answer"] for r in batch for _ in range(cfg.n_samples)]
        prompts = [search_prompt(q, cfg.prompt_style, tok) for q in questions]
        raw.eval()
        t0 = time.perf_counter()
        sp = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens_per_round,
                            seed=cfg.seed * 100003 + step)
        rollouts = engine.run(questions, prompts, sp)
        t_rollout = time.perf_counter() - t0
        comps = [reward_fn(r.response, g) for r, g in zip(rollouts, golds, strict=True)]
        rewards = [c["total"] for c in comps]
        seq_adv = group_advantages(rewards, cfg.n_samples, cfg.algo)
        toks = [tokenize_rollout(tok, r) for r in rollouts]
        # sequences: prompt + response; loss positions: response tokens with mask 1
        seqs = [p + ids for p, ids, _ in toks]
        lmask = [[0] * len(p) + m for p, _, m in toks]
        raw.train()
        n_loss_tokens = max(1, sum(sum(m[1:]) for m in lmask))
        kl_rows: list[list[float]] | None = None
        ref_lp_rows: list[list[float]] = []
        if ref is not None:  # per-token log-ratio to the reference, before the update
            kl_rows = []
            with torch.no_grad():
                for s in range(0, len(seqs), cfg.micro_batch_size):
                    ids, att = _pad(seqs[s:s + cfg.micro_batch_size], tok.pad_token_id, fabric.device)
                    lp, rlp = _logprobs(model, ids, att), _logprobs(ref, ids, att)
                    for row_p, row_r, a in zip(lp.tolist(), rlp.tolist(), att, strict=True):
                        n_tok = int(a.sum()) - 1
                        ref_lp_rows.append(row_r[:n_tok])
                        kl_rows.append([p - r for p, r in zip(row_p[:n_tok], row_r[:n_tok], strict=True)])
        masks_shift = [m[1:] for m in lmask]
        adv_rows = token_advantages(seq_adv, masks_shift, cfg.algo, kl_rows if cfg.algo != "grpo" else None,
                                    cfg.kl_coef)
        optim.zero_grad(set_to_none=True)
        loss_sum, kl_sum = 0.0, 0.0
        for s in range(0, len(seqs), cfg.micro_batch_size):
            chunk = slice(s, s + cfg.micro_batch_size)
            ids, att = _pad(seqs[chunk], tok.pad_token_id, fabric.device)
            width = ids.shape[1] - 1
            m = _pad_float(masks_shift[chunk], width, fabric.device)
            adv = _pad_float(adv_rows[chunk], width, fabric.device)
            lp = _logprobs(model, ids, att)
            old = lp.detach()  # one update per rollout batch: the sampling policy is the current one
            ratio = torch.exp(lp - old)
            surr = torch.minimum(ratio * adv, torch.clamp(ratio, 1 - cfg.clip_eps, 1 + cfg.clip_eps) * adv)
            loss = -(surr * m).sum() / n_loss_tokens
            if ref is not None and cfg.algo == "grpo":
                rlp = _pad_float(ref_lp_rows[chunk], width, fabric.device)
                k3 = torch.exp(rlp - lp) - (rlp - lp) - 1
                kl_term = (k3 * m).sum() / n_loss_tokens
                loss = loss + cfg.kl_coef * kl_term
                kl_sum += float(kl_term.detach())
            fabric.backward(loss)
            loss_sum += float(loss.detach())
        grad_norm = None if deepspeed else fabric.clip_gradients(model, optim, max_norm=cfg.max_grad_norm)
        optim.step()
        n = len(rollouts)
        row = {"stage": stage_name, "step": step,
               "reward/total": sum(rewards) / n,
               **{f"reward/{k}": sum(c[k] for c in comps) / n for k in ("retrieval", "format", "answer")},
               "searches/mean": sum(r.num_searches for r in rollouts) / n,
               "searches/frac_rollouts": sum(r.num_searches > 0 for r in rollouts) / n,
               "finish/answer": sum(r.finish == "answer" for r in rollouts) / n,
               "tokens/response": sum(len(t[1]) for t in toks) / n,
               "tokens/doc_frac": sum(len(t[2]) - sum(t[2]) for t in toks) / max(1, sum(len(t[2]) for t in toks)),
               "loss": loss_sum, "kl": kl_sum if ref is not None else 0.0,
               "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
               "time/rollout_s": t_rollout, "time/step_s": time.perf_counter() - t_step}
        if ref is not None and cfg.algo != "grpo":
            row["kl"] = sum(sum(k * mm for k, mm in zip(kr, ms, strict=True)) for kr, ms in
                            zip(kl_rows, masks_shift, strict=True)) / n_loss_tokens
        history.append(row)
        append_csv_row(csv_path, row)
        for lg in loggers or []:
            lg.log_metrics({f"{stage_name}/{k}": v for k, v in row.items() if isinstance(v, int | float)}, step=step)
        with open(samples_path, "a", encoding="utf-8") as f:
            for r, c in zip(rollouts, comps, strict=True):
                f.write(json.dumps({"step": step, "question": r.question, "response": r.response,
                                    "queries": r.queries, "finish": r.finish, "reward": c}) + "\n")
        log.info("%s step %d/%d: reward %.3f (retrieval %.3f format %.3f answer %.3f) searches %.2f "
                 "rollout %.1fs step %.1fs", stage_name, step, cfg.steps, row["reward/total"],
                 row["reward/retrieval"], row["reward/format"], row["reward/answer"], row["searches/mean"],
                 t_rollout, row["time/step_s"])
    for lg in loggers or []:
        lg.save()
    raw.eval()
    policy_dir = save_policy(raw, tok, out_dir / "policy")
    summary = {"stage": stage_name, "steps": cfg.steps, "policy": str(policy_dir), "init_from": str(policy_path),
               "first": history[0] if history else {}, "last": history[-1] if history else {}}
    atomic_write_json(out_dir / "summary.json", summary)
    return summary


def _pad(seqs: list[list[int]], pad_id: int, device: Any) -> tuple[Any, Any]:
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    att = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        att[i, : len(s)] = 1
    return ids.to(device), att.to(device)


def _pad_float(rows: list[list[float]], width: int, device: Any) -> Any:
    import torch

    out = torch.zeros((len(rows), width), dtype=torch.float32)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r[:width], dtype=torch.float32)
    return out.to(device)
