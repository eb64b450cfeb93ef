"""Outcome-reward RL for search-interleaved rollouts: REINFORCE++ with baseline and GRPO-style
group-normalised advantages, masked token-level policy gradient, Lightning Fabric for devices and
strategies (CPU, one GPU, DDP, FSDP, DeepSpeed ZeRO-2/3: `rucai.runtime.fabric` on the `hardware`
profile), step checkpoints through `fabric.save` (so DeepSpeed's sharded states too).

Per step (OpenRLHF's schedule, as the released scripts run it): `prompts_per_step` questions x
`n_samples` rollouts (temperature 1.0, top_p 0.95) with the current policy -> rewards (per component) ->
advantages over the whole rollout batch -> `max_epochs` passes over it in shuffled minibatches of
`train_batch_size` rollouts, one clipped policy update each, the ratio against the rollout-time
log-probs (so from the second minibatch on the ratio moves off 1 and clipping acts; with
train_batch_size null one update, ratio 1) -> CSV/logger row.

  reinforce_pp_baseline  (Qwen recipe, Llama stage 2; OpenRLHF reinforce_baseline) A = r - mean(r of the
                         prompt's samples); per-token return with the KL penalty folded into the reward
                         (k1, `kl_coef`); whitened over all loss tokens of the rollout batch
  grpo                   (Llama stage 1; OpenRLHF group_norm) A = (r - mean) / (std + 1e-9) within the
                         prompt's samples; the same KL-in-return (kl_mode=reward, the authors'), or k3 KL
                         as a loss term (kl_mode=loss); no whitening
Loss: each rollout's token-mean surrogate averaged over the minibatch's rollouts (loss_agg=seq_mean,
OpenRLHF with micro_train_batch_size 1) or the token mean over the minibatch (token_mean).
"""

from __future__ import annotations

import logging
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rucai.rl.core import ALGOS, group_advantages, kl_k1, kl_k3, minibatches, policy_loss, token_advantages
from rucai.runtime.signals import PendingSignals
from rucai.utils.io import append_csv_row

log = logging.getLogger(__name__)

__all__ = ["ALGOS", "group_advantages", "kl_k1", "minibatches", "policy_loss", "save_checkpoint", "save_policy",
           "token_advantages", "train_stage"]


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


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def save_checkpoint(fabric: Any, path: Path, state: dict[str, Any]) -> Path:
    """`fabric.save` into `<path>.tmp` (a file, or a folder under DeepSpeed), then rename it over
    `path` on rank zero: a kill mid-save leaves the previous checkpoint intact."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if fabric.is_global_zero:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove(tmp)
    fabric.barrier()
    fabric.save(tmp, state)
    fabric.barrier()
    if fabric.is_global_zero:
        old = path.with_name(path.name + ".old")
        _remove(old)
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        _remove(old)
    fabric.barrier()
    return path


def _truncate_logs(csv_path: Path, samples_path: Path, step: int) -> None:
    """Drop the rows of steps after `step` (run after the checkpoint was saved, before the kill)."""
    import csv
    import io
    import json

    from rucai.utils.io import atomic_write_text

    if csv_path.exists():
        with open(csv_path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            fields, rows = reader.fieldnames or [], [r for r in reader if int(r["step"]) <= step]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
        atomic_write_text(csv_path, buf.getvalue())
    if samples_path.exists():
        keep = [ln for ln in samples_path.read_text(encoding="utf-8").splitlines()
                if ln.strip() and json.loads(ln)["step"] <= step]
        atomic_write_text(samples_path, "".join(ln + "\n" for ln in keep))


def _optimizer(fabric: Any, params: Any, lr: float, weight_decay: float) -> Any:
    """AdamW; DeepSpeed's CPU AdamW when ZeRO offloads the optimizer (DeepSpeed refuses torch's)."""
    import torch

    strategy = fabric.strategy
    zero = (getattr(strategy, "config", None) or {}).get("zero_optimization", {}) \
        if type(strategy).__name__ == "DeepSpeedStrategy" else {}
    if (zero.get("offload_optimizer") or {}).get("device") == "cpu":
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(params, lr=lr, weight_decay=weight_decay, adamw_mode=True)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def train_stage(policy_path: str, out_dir: Path, data: list[dict], retriever: Any, s: Any, *, hardware: Any,
                prompt_style: str, seed: int, name: str = "stage1", resume: str | None = None,
                log_row: Callable[[dict[str, Any], int], None] | None = None) -> dict[str, Any]:
    """Train one stage from `policy_path` (an HF folder); save the policy to `out_dir/policy`.

    s: the stage's settings (`method.stage1`, a `config.RLStageConfig` or its DictConfig); hardware:
    the `hardware` profile (Fabric strategy, precision, dtype); data: rows with `question` and
    `answer`. Writes `out_dir/rewards.csv` (one row per step, every reward component) and
    `out_dir/rollouts.jsonl` (every rollout with its reward); every `s.checkpoint_every` steps
    `out_dir/checkpoints/last.ckpt` (policy, optimizer, step, RNG states, the data order), which
    `resume` (that path) continues from. `log_row(row, step)` gets every step's row."""
    import json

    import torch

    from rucai import runtime
    from rucai.llm.base import SamplingParams
    from rucai.r1searcher.prompts import search_prompt
    from rucai.r1searcher.rewards import get_reward
    from rucai.r1searcher.rollout import SearchRolloutEngine, search_hf_llm, tokenize_rollout

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / "checkpoints" / "last.ckpt"
    reward_fn = get_reward(s.reward)
    fabric = runtime.fabric(hardware, max_grad_norm=s.max_grad_norm)
    deepspeed = type(fabric.strategy).__name__ == "DeepSpeedStrategy"
    fabric.launch()
    tok = runtime.load_tokenizer(policy_path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    # trained weights: fp32 masters under "*-mixed" precision (bf16 weights would round lr-2e-6 updates
    # away), except under DeepSpeed, which keeps its own fp32 master copy in the optimizer
    precision = str(getattr(hardware, "precision", "") or "")
    model = runtime.load_causal_lm(policy_path, hardware,
                                   dtype="float32" if precision.endswith("-mixed") and not deepspeed else "auto")
    if s.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    ref = None
    if s.kl_coef > 0:
        ref = runtime.load_causal_lm(policy_path, hardware, dtype="auto").eval().requires_grad_(False)
        ref = fabric.to_device(ref)
    if deepspeed:  # DeepSpeed wraps model and optimizer together
        optim = _optimizer(fabric, model.parameters(), s.lr, s.weight_decay)
        model, optim = fabric.setup(model, optim)
    else:  # FSDP needs the optimizer built over the wrapped (sharded) parameters
        model = fabric.setup_module(model)
        optim = fabric.setup_optimizers(_optimizer(fabric, model.parameters(), s.lr, s.weight_decay))
    raw = model.module if hasattr(model, "module") else model
    llm = search_hf_llm(model=raw, tokenizer=tok, batch_size=max(s.micro_batch_size, 1) * 4,
                        device=str(fabric.device))
    # issue 13 item 4: rollout_backend=vllm generates on an in-process vLLM engine whose weights are
    # synced from the policy before every rollout batch; all code after engine.run is shared
    vsync = _vllm_rollout(s, policy_path, seed, hardware)
    if vsync is not None:
        llm = vsync.llm
    tok.padding_side = "left"  # HFLLM's; training pads on the right explicitly below
    engine = SearchRolloutEngine(llm, retriever, topk=s.topk, max_searches=s.max_searches,
                                 max_tokens_per_round=s.max_tokens_per_round,
                                 max_response_tokens=s.max_response_tokens)
    rng = random.Random(seed)
    order: list[int] = []  # the data order: indices not yet drawn (a fresh permutation when short)
    history: list[dict[str, Any]] = []
    csv_path, samples_path = out_dir / "rewards.csv", out_dir / "rollouts.jsonl"
    start = 0
    if resume:
        state = {"model": model, "optimizer": optim, "step": 0, "order": [], "data_rng": None,
                 "torch_rng": None, "cuda_rng": None, "history": []}
        fabric.load(resume, state, weights_only=False)
        start, order, history = int(state["step"]), list(state["order"]), list(state["history"])
        rng.setstate(state["data_rng"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        if fabric.is_global_zero:
            _truncate_logs(csv_path, samples_path, start)
        log.info("%s: resumed from %s after step %d of %d", name, resume, start, s.steps)
    elif fabric.is_global_zero:  # a fresh start (an earlier attempt without ckpt_path=last): no old rows
        for p in (csv_path, samples_path, ckpt_path):
            _remove(p)
    fabric.barrier()
    # SLURM's pre-timeout signal / SIGTERM: checkpoint at the end of the step in flight, then stop
    stop_signals = PendingSignals().install()
    for step in range(start + 1, s.steps + 1):
        t_step = time.perf_counter()
        if len(order) < s.prompts_per_step:
            perm = list(range(len(data)))
            rng.shuffle(perm)
            order += perm
        batch = [data[i] for i in order[:s.prompts_per_step]]
        del order[:s.prompts_per_step]
        questions = [r["question"] for r in batch for _ in range(s.n_samples)]
        golds = [r["answer"] for r in batch for _ in range(s.n_samples)]
        prompts = [search_prompt(q, prompt_style, tok) for q in questions]
        raw.eval()
        t0 = time.perf_counter()
        if vsync is not None:  # issue 13 item 4: the engine samples from the current policy
            vsync.sync(raw)
        sp = SamplingParams(temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens_per_round,
                            seed=seed * 100003 + step)
        rollouts = engine.run(questions, prompts, sp)
        t_rollout = time.perf_counter() - t0
        comps = [reward_fn(r.response, g) for r, g in zip(rollouts, golds, strict=True)]
        rewards = [c["total"] for c in comps]
        seq_adv = group_advantages(rewards, s.n_samples, s.algo)
        toks = [tokenize_rollout(tok, r) for r in rollouts]
        # sequences: prompt + response; loss positions: response tokens with mask 1
        seqs = [p + ids for p, ids, _ in toks]
        lmask = [[0] * len(p) + m for p, _, m in toks]
        raw.train()
        n_loss_tokens = max(1, sum(sum(m[1:]) for m in lmask))
        masks_shift = [m[1:] for m in lmask]
        schedule = minibatches(len(seqs), s.train_batch_size, int(s.max_epochs), seed * 1000003 + step)
        # rollout-time log-probs (the PPO ratio's denominator after the first update; OpenRLHF's
        # action_log_probs) and the reference's, both before any update of this step
        need_old = len(schedule) > 1
        old_lp_rows: list[list[float]] = []
        ref_lp_rows: list[list[float]] = []
        if need_old or ref is not None:
            with torch.no_grad():
                for b in range(0, len(seqs), s.micro_batch_size):
                    ids, att = _pad(seqs[b:b + s.micro_batch_size], tok.pad_token_id, fabric.device)
                    lp = _logprobs(model, ids, att).tolist()
                    rlp = _logprobs(ref, ids, att).tolist() if ref is not None else None
                    for i, a in enumerate(att):
                        n_tok = int(a.sum()) - 1
                        old_lp_rows.append(lp[i][:n_tok])
                        if rlp is not None:
                            ref_lp_rows.append(rlp[i][:n_tok])
        kl_rows = kl_k1(old_lp_rows, ref_lp_rows) if ref is not None else None
        adv_rows = token_advantages(seq_adv, masks_shift, s.algo, kl_rows, s.kl_coef, s.kl_mode)
        kl_loss = ref is not None and s.kl_mode == "loss"
        losses, kl_terms, clipped, ratio_dev, grad_norm = [], [], 0.0, 0.0, None
        for sel in schedule:
            optim.zero_grad(set_to_none=True)
            denom = float(len(sel)) if s.loss_agg == "seq_mean" else float(max(1, sum(sum(masks_shift[i]) for i in sel)))
            loss_mb, kl_mb = 0.0, 0.0
            for b in range(0, len(sel), s.micro_batch_size):
                chunk = sel[b:b + s.micro_batch_size]
                ids, att = _pad([seqs[i] for i in chunk], tok.pad_token_id, fabric.device)
                width = ids.shape[1] - 1
                m = _pad_float([masks_shift[i] for i in chunk], width, fabric.device)
                adv = _pad_float([adv_rows[i] for i in chunk], width, fabric.device)
                lp = _logprobs(model, ids, att)
                # a single update per rollout batch: the sampling policy is the current one (ratio 1)
                old = _pad_float([old_lp_rows[i] for i in chunk], width, fabric.device) if need_old else lp.detach()
                loss, ratio = policy_loss(lp, old, adv, m, s.clip_eps, s.loss_agg, denom)
                if kl_loss:
                    rlp = _pad_float([ref_lp_rows[i] for i in chunk], width, fabric.device)
                    k3 = kl_k3(lp, rlp)
                    kl_term = ((k3 * m).sum(-1) / m.sum(-1).clamp(min=1)).sum() / len(sel) \
                        if s.loss_agg == "seq_mean" else (k3 * m).sum() / denom
                    loss = loss + s.kl_coef * kl_term
                    kl_mb += float(kl_term.detach())
                fabric.backward(loss)
                loss_mb += float(loss.detach())
                with torch.no_grad():
                    clipped += float((((ratio - 1).abs() > s.clip_eps).float() * m).sum())
                    ratio_dev = max(ratio_dev, float(((ratio - 1).abs() * m).max()))
            grad_norm = None if deepspeed else fabric.clip_gradients(model, optim, max_norm=s.max_grad_norm)
            optim.step()
            losses.append(loss_mb)
            kl_terms.append(kl_mb)
        n = len(rollouts)
        row = {"stage": name, "step": step,
               "reward/total": sum(rewards) / n,
               **{f"reward/{k}": sum(c[k] for c in comps) / n for k in ("retrieval", "format", "answer")},
               "searches/mean": sum(r.num_searches for r in rollouts) / n,
               "searches/frac_rollouts": sum(r.num_searches > 0 for r in rollouts) / n,
               "finish/answer": sum(r.finish == "answer" for r in rollouts) / n,
               "tokens/response": sum(len(t[1]) for t in toks) / n,
               "tokens/doc_frac": sum(len(t[2]) - sum(t[2]) for t in toks) / max(1, sum(len(t[2]) for t in toks)),
               "loss": sum(losses) / len(losses), "kl": sum(kl_terms) / len(kl_terms) if kl_loss else 0.0,
               "updates": len(schedule), "ratio/clip_frac": clipped / (n_loss_tokens * int(s.max_epochs)),
               "ratio/max_abs_dev": ratio_dev,
               "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
               "time/rollout_s": t_rollout, "time/step_s": time.perf_counter() - t_step}
        if ref is not None and not kl_loss:  # mean k1 over the loss tokens at rollout time
            row["kl"] = sum(sum(k * mm for k, mm in zip(kr, ms, strict=True)) for kr, ms in
                            zip(kl_rows, masks_shift, strict=True)) / n_loss_tokens
        # the rollouts' answers against the gold (the authors' normalisation; 0 without an answer tag) and
        # the share of well-formed rollouts (`rewards.format_ok`), whatever the stage's reward
        from rucai.eval.qa import cover_exact_match, f1_score
        from rucai.r1searcher.rewards import answer_text, format_ok

        preds = [answer_text(r.response) for r in rollouts]
        row["answer/cover_em"] = sum(cover_exact_match(p, g) for p, g in zip(preds, golds, strict=True)
                                     if p is not None) / n
        row["answer/f1"] = sum(f1_score(p, g) for p, g in zip(preds, golds, strict=True) if p is not None) / n
        row["format/ok"] = sum(format_ok(r.response) for r in rollouts) / n
        history.append(row)
        if fabric.is_global_zero:
            with open(samples_path, "a", encoding="utf-8") as f:
                for r, c in zip(rollouts, comps, strict=True):
                    f.write(json.dumps({"step": step, "question": r.question, "response": r.response,
                                        "queries": r.queries, "finish": r.finish, "reward": c}) + "\n")
            append_csv_row(csv_path, row)
            if log_row is not None:
                log_row(row, step)
        log.info("%s step %d/%d: reward %.3f (retrieval %.3f format %.3f answer %.3f) searches %.2f "
                 "rollout %.1fs step %.1fs", name, step, s.steps, row["reward/total"],
                 row["reward/retrieval"], row["reward/format"], row["reward/answer"], row["searches/mean"],
                 t_rollout, row["time/step_s"])
        stopping = stop_signals.pending is not None
        if (s.checkpoint_every and step % s.checkpoint_every == 0 or stopping) and step < s.steps:
            save_checkpoint(fabric, ckpt_path, {
                "model": model, "optimizer": optim, "step": step, "order": list(order), "data_rng": rng.getstate(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "history": history})
        if stopping:
            log.warning("%s: stop signal after step %d; checkpoint saved, resume with ckpt_path=last", name, step)
            stop_signals.forward()
    stop_signals.restore()
    if vsync is not None:
        vsync.close()
    raw.eval()
    policy_dir = out_dir / "policy"
    if fabric.is_global_zero:
        save_policy(raw, tok, policy_dir)
        _remove(ckpt_path)  # the stage is done: its policy replaces the step checkpoint
    fabric.barrier()
    return {"stage": name, "steps": s.steps, "policy": str(policy_dir), "init_from": str(policy_path),
            "resumed_after_step": start, "first": history[0] if history else {},
            "last": history[-1] if history else {}}


# ---- issue 13 item 4: the vLLM rollout path (rucai/r1searcher/vllm_sync.py) ------------------------------

def _vllm_rollout(s: Any, policy_path: str, seed: int, hardware: Any) -> Any:
    """A `vllm_sync.VLLMRollout` from the stage's initial policy when `s.rollout_backend == "vllm"`,
    else None (the hf path: the policy generates its own rollouts)."""
    if str(getattr(s, "rollout_backend", "hf")) != "vllm":
        return None
    from rucai.r1searcher.vllm_sync import VLLMRollout

    return VLLMRollout(policy_path, seed=seed, engine_kwargs=getattr(s, "rollout_engine", None), hardware=hardware)


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
