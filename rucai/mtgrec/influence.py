"""Data-group influence for MTGRec's curriculum (the authors' `grad_utils.py` / `main_less.py`).

After each pre-training stage, for every tokenizer i (data group: the training sequences written
with tokenizer i) the mean training-loss gradient g_i is preconditioned with the optimizer's Adam
moments m, v exactly as the authors' `obtain_gradients_with_adam` does:

    m' = b1 m + (1 - b1) g_i,   v' = b2 v + (1 - b2) g_i^2,   Gamma_i = m' / sqrt(v' + eps)

(b1 0.9, b2 0.999, eps 1e-8, hard-coded there; note sqrt(v' + eps), not sqrt(v') + eps as the
issue wrote). With the mean validation gradients g_val,j (validation sequences under tokenizer j),
I_ij = Gamma_i . g_val,j. Stage matrices are accumulated with weights = the learning rate at the
end of each stage, normalised to sum 1 (`accumulate_inf_score`), averaged over j, and the
tokenizer sampling probabilities are softmax(I / tau).

Memory: no per-example gradients. Each group's gradient is accumulated in the parameters' `.grad`
as the gradient of the summed loss over the group's batches (one flat vector per group kept), and
under DDP the sums and example counts are all-reduced before dividing, so every rank gets the same
exact mean gradient and the same probabilities.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch

BETA1, BETA2, EPS = 0.9, 0.999, 1e-8


def adam_precondition(g: torch.Tensor, m: torch.Tensor, v: torch.Tensor, beta1: float = BETA1,
                      beta2: float = BETA2, eps: float = EPS) -> torch.Tensor:
    m2 = beta1 * m + (1 - beta1) * g
    v2 = beta2 * v + (1 - beta2) * g * g
    return m2 / torch.sqrt(v2 + eps)


def flat_adam_state(optimizer: torch.optim.Optimizer, params: Sequence[torch.nn.Parameter]
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Flattened exp_avg / exp_avg_sq of `params` (zeros where the optimizer has no state yet)."""
    ms, vs = [], []
    for p in params:
        st = optimizer.state.get(p, {})
        ms.append(st["exp_avg"].reshape(-1) if "exp_avg" in st else torch.zeros(p.numel(), device=p.device))
        vs.append(st["exp_avg_sq"].reshape(-1) if "exp_avg_sq" in st else torch.zeros(p.numel(), device=p.device))
    return torch.cat(ms).float(), torch.cat(vs).float()


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
    return t


def group_mean_gradient(
    loss_sum: Callable[[object], tuple[torch.Tensor, int]],
    batches: Iterable[object],
    params: Sequence[torch.nn.Parameter],
    all_reduce: Callable[[torch.Tensor], torch.Tensor] = _all_reduce,
) -> torch.Tensor:
    """Mean per-example loss gradient over `batches` (this rank's shard), flattened over `params`.

    `loss_sum(batch) -> (sum of the batch's per-example losses, number of examples)`. Gradients
    accumulate in `.grad` (nothing per example is stored); the sum and the count are all-reduced
    across ranks, so the result is the mean over all ranks' examples. Leaves every `.grad` = None.
    """
    for p in params:
        p.grad = None
    count = 0
    for batch in batches:
        loss, n = loss_sum(batch)
        loss.backward()
        count += int(n)
    g = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in params])
    for p in params:
        p.grad = None
    stats = all_reduce(torch.cat([g, torch.tensor([float(count)], device=g.device)]))
    total = float(stats[-1])
    return stats[:-1] / max(total, 1.0)


def influence_matrix(gammas: torch.Tensor, val_grads: torch.Tensor) -> torch.Tensor:
    """I[i, j] = Gamma_i . g_val,j for [K, P] x [K', P] -> [K, K']."""
    return gammas.double() @ val_grads.double().T


def accumulate(stage_scores: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """sum_s w_s I_s / sum_s w_s (the authors' `accumulate_inf_score`)."""
    total = float(sum(weights))
    if total == 0:
        raise ValueError("stage weights sum to 0 (learning rate 0 at every stage end?)")
    return sum(s * (w / total) for s, w in zip(stage_scores, weights, strict=True))


def sampling_probs(influence: torch.Tensor, tau: float) -> torch.Tensor:
    """softmax(mean_j I[:, j] / tau) over the K tokenizers."""
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    return torch.softmax(influence.double().mean(-1) / tau, dim=0)
