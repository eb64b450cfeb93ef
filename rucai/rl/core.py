"""The project's RL core, shared by every paper that trains a policy on sampled outputs (R1-Searcher's
search rollouts, STREAM-Rec's recommendation rollouts): sequence- and token-level advantages
(OpenRLHF's reinforce_baseline and group_norm = GRPO), the k1 / k3 KL estimates, the PPO-clip
surrogate and the update schedule over one rollout batch. Pure functions over lists and tensors; no
model, rollout or reward code here (those stay with each paper).

  reinforce_pp_baseline  A = r - mean(r of the prompt's samples), per-token returns whitened over the
                         batch's loss tokens
  grpo                   A = (r - mean) / (std + 1e-9) within the prompt's samples (std with n - 1)
"""

from __future__ import annotations

import math
import random
from typing import Any

ALGOS = ("reinforce_pp_baseline", "grpo")
KL_MODES = ("reward", "loss")
LOSS_AGGS = ("seq_mean", "token_mean")

__all__ = ["ALGOS", "KL_MODES", "group_advantages", "kl_k1", "kl_k3", "minibatches", "policy_loss",
           "token_advantages"]


def group_advantages(rewards: list[float], n: int, algo: str) -> list[float]:
    """Sequence-level advantages for rewards laid out prompt-major (`n` samples per prompt): OpenRLHF's
    process_experiences (reinforce_baseline: r - mean; group_norm: (r - mean) / (std + 1e-9), std with n - 1)."""
    if len(rewards) % n:
        raise ValueError(f"{len(rewards)} rewards are not a multiple of n={n}")
    out = []
    for g in range(0, len(rewards), n):
        grp = rewards[g:g + n]
        mean = sum(grp) / n
        if algo == "grpo":
            std = math.sqrt(sum((x - mean) ** 2 for x in grp) / max(n - 1, 1)) if n > 1 else 0.0
            out += [(x - mean) / (std + 1e-9) for x in grp]
        else:
            out += [x - mean for x in grp]
    return out


def kl_k1(logprobs: list[list[float]], ref_logprobs: list[list[float]]) -> list[list[float]]:
    """Per-token k1 KL estimate log pi(a_t) - log pi_ref(a_t) (OpenRLHF compute_approx_kl without k3)."""
    return [[p - r for p, r in zip(lp, rlp, strict=True)] for lp, rlp in zip(logprobs, ref_logprobs, strict=True)]


def token_advantages(seq_adv: list[float], masks: list[list[int]], algo: str,
                     kl: list[list[float]] | None = None, kl_coef: float = 0.0,
                     kl_mode: str = "reward") -> list[list[float]]:
    """Per-token advantages, OpenRLHF's compute_reward + get_cumulative_returns (gamma 1) + the replay
    buffer's whitening. kl_mode=reward (the authors' runs, both algos): the per-token reward is
    -kl_coef * kl_t on mask-1 tokens plus the sequence advantage at the end, so token t gets
    a - kl_coef * sum_{t' >= t} kl_t' m_t'; kl_mode=loss: the sequence advantage on every token (the KL
    goes into the loss). reinforce_pp_baseline then whitens over all mask-1 tokens of the batch
    ((v - mean) / sqrt(max(var, 1e-8)), var over the tokens, not n - 1); grpo (group_norm) does not."""
    fold = kl is not None and kl_coef > 0 and kl_mode == "reward"
    out = []
    for i, (a, m) in enumerate(zip(seq_adv, masks, strict=True)):
        if fold:
            ret, acc = [0.0] * len(m), 0.0
            for t in range(len(m) - 1, -1, -1):
                acc += -kl_coef * kl[i][t] * m[t]
                ret[t] = acc + a
            out.append(ret)
        else:
            out.append([a] * len(m))
    if algo == "reinforce_pp_baseline":
        vals = [v for row, m in zip(out, masks, strict=True) for v, k in zip(row, m, strict=True) if k]
        if vals:
            mu = sum(vals) / len(vals)
            rstd = 1.0 / math.sqrt(max(sum((v - mu) ** 2 for v in vals) / len(vals), 1e-8))
            out = [[(v - mu) * rstd for v in row] for row in out]
    return out


def kl_k3(logprobs: Any, ref_logprobs: Any) -> Any:
    """Per-token k3 KL estimate exp(r - p) - (r - p) - 1 >= 0 (tensors; GRPO's KL loss term)."""
    import torch

    d = ref_logprobs - logprobs
    return torch.exp(d) - d - 1


def policy_loss(logprobs: Any, old_logprobs: Any, advantages: Any, mask: Any, clip_eps: float,
                loss_agg: str = "seq_mean", denom: float | None = None) -> tuple[Any, Any]:
    """The PPO-clip surrogate of one chunk of rollouts ([B, T] tensors) and its ratio exp(lp - old).

    seq_mean (OpenRLHF PolicyLoss): each rollout's mean over its mask-1 tokens, summed over the chunk and
    divided by `denom` (the minibatch's rollouts); token_mean: summed over mask-1 tokens / `denom` (the
    minibatch's loss tokens). `denom` null: this chunk's own count."""
    import torch

    ratio = torch.exp(logprobs - old_logprobs)
    surr = torch.minimum(ratio * advantages, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * advantages)
    per_tok = -surr * mask
    if loss_agg == "seq_mean":
        loss = (per_tok.sum(-1) / mask.sum(-1).clamp(min=1)).sum() / (denom or logprobs.shape[0])
    else:
        loss = per_tok.sum() / (denom or mask.sum().clamp(min=1))
    return loss, ratio


def minibatches(n: int, train_batch_size: int | None, max_epochs: int, seed: int) -> list[list[int]]:
    """The update schedule over one rollout batch of `n` rollouts (OpenRLHF ppo_train): `max_epochs`
    passes, each a fresh shuffle (seeded) cut into minibatches of `train_batch_size` (null: all `n`)."""
    tbs = n if train_batch_size is None else int(train_batch_size)
    if n % tbs:
        raise ValueError(f"train_batch_size={tbs} does not divide the {n} rollouts")
    rng = random.Random(seed)
    out = []
    for _ in range(max_epochs):
        idx = list(range(n))
        if tbs < n:
            rng.shuffle(idx)
        out += [idx[b:b + tbs] for b in range(0, n, tbs)]
    return out
