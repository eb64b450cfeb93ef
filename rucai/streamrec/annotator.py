"""Stage 2's iterative inference (the annotation of thinking tokens), as the secondary sources give
the paper's equations (experiments/streamrec/README.md):

    r_i = MLP_r(t - s_(i-1))                  residual between the target and the current state
    o_i = argmin_c || e(c) - r_i ||_2        the code token whose embedding best approximates r_i
    s_i = MLP_s(s_0 + sum_(j<=i) e(o_j))      the state after the tokens so far

t = the mean of the target's code-token embeddings and s_0 = the mean of the encoder's states over
the history (ours: the sources do not define them), both from the frozen pre-trained T5, and e the
T5's (frozen) token embeddings restricted to the code tokens. Both MLPs are residual (x + W2 gelu(W1 x))
with W2 zero-initialised (ours), so an untrained annotator is residual quantisation in the embedding
space: each token picks the code nearest to what is left of t - s_0. Training (ours, after the
sources' "state-target contrastive loss" and "quantisation loss"): an InfoNCE between every s_i and
t over the batch (in-batch negatives, temperature tau), plus gamma ||s_i - t||^2 / D, plus
beta ||r_i - sg(e(o_i))||^2. The chosen codes enter the state as their embeddings e(o_i), so the
InfoNCE and distance terms train MLP_s, and MLP_r learns only from the commitment (beta = 0 by
default: it stays the identity, and the annotation is residual quantisation of the gap t - s_(i-1)
left by the learned state). Option `straight_through` feeds r_i + sg(e(o_i) - r_i) instead, so
gradients reach MLP_r through the state: that diverges. In the first Office runs (2026-12-05:
straight-through, beta 0.25, no distance term) the states went from ||t - s_0|| = 3.6 to ~6e4 within
3 epochs and the annotation collapsed onto 2-4 distinct tokens; tests/test_streamrec.py reproduces
the divergence on a constructed example and shows the default settings approach the targets.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn


class ResidualMLP(nn.Module):
    """x + W2 gelu(W1 x); W2 = 0 at init (the identity)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(F.gelu(self.fc1(x)))


class ThinkingAnnotator(nn.Module):
    def __init__(self, dim: int, steps: int, hidden: int = 256, tau: float = 0.1, beta: float = 0.0,
                 gamma: float = 1.0, straight_through: bool = False):
        super().__init__()
        if steps < 1:
            raise ValueError(f"annotator steps={steps}; need >= 1 thinking token")
        self.steps, self.tau, self.beta, self.gamma = int(steps), float(tau), float(beta), float(gamma)
        self.straight_through = bool(straight_through)
        self.residual = ResidualMLP(dim, hidden)
        self.state = ResidualMLP(dim, hidden)

    def forward(self, s0: torch.Tensor, t: torch.Tensor, codebook: torch.Tensor) -> dict[str, torch.Tensor]:
        """s0, t [B, D]; codebook [C, D] (the code tokens' embeddings). Returns `codes` [B, l] (rows
        of `codebook`), `states` [B, l, D] (s_1..s_l), `loss` (InfoNCE + gamma distance + beta commitment,
        each a mean over the steps)."""
        acc, s = s0, s0
        codes, states, commit = [], [], []
        for _ in range(self.steps):
            r = self.residual(t - s)
            o = torch.cdist(r.detach().float(), codebook.float()).argmin(-1)  # nearest in L2
            e = codebook[o]
            commit.append(F.mse_loss(r, e.detach()))
            acc = acc + (r + (e - r).detach() if self.straight_through else e)
            s = self.state(acc)
            codes.append(o)
            states.append(s)
        states_t = torch.stack(states, 1)
        nce = sum(info_nce(states_t[:, i], t, self.tau) for i in range(self.steps)) / self.steps
        dist = F.mse_loss(states_t, t.unsqueeze(1).expand_as(states_t))  # mean over steps, rows, dims
        loss = nce + self.gamma * dist + self.beta * sum(commit) / self.steps
        return {"codes": torch.stack(codes, 1), "states": states_t, "loss": loss, "nce": nce.detach(),
                "distance": dist.detach()}

    @torch.no_grad()
    def state_of(self, s0: torch.Tensor, code_emb: torch.Tensor) -> torch.Tensor:
        """The final state s_l after given thinking tokens' embeddings [B, l, D] (RL's similarity reward)."""
        return self.state(s0 + code_emb.sum(1))


def info_nce(a: torch.Tensor, b: torch.Tensor, tau: float) -> torch.Tensor:
    """Mean over rows of -log softmax(cos(a_i, b_j) / tau)_ii (in-batch negatives)."""
    logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / tau
    return F.cross_entropy(logits, torch.arange(len(a), device=a.device))


class AnnotatorFit(L.LightningModule):
    """Trains a StreamRec model's annotator (its anchor T5 frozen) on the training examples."""

    def __init__(self, model: nn.Module, lr: float = 1e-3):
        super().__init__()
        self.model, self.lr = model, float(lr)
        self.model.requires_grad_(False)
        self.model.annotator.requires_grad_(True)

    def _run(self, batch):
        ids, mask = self.model.model_inputs(batch)
        s0, t = self.model.anchor_views(ids, mask, batch["target"])
        return s0, t, self.model.annotator(s0, t, self.model.codebook().float())

    def training_step(self, batch, batch_idx):
        _, _, out = self._run(batch)
        self.log("train/loss", out["loss"], on_step=True, on_epoch=True, prog_bar=True, batch_size=len(batch["target"]))
        self.log("train/nce", out["nce"], on_step=False, on_epoch=True, batch_size=len(batch["target"]))
        self.log("train/distance", out["distance"], on_step=False, on_epoch=True, batch_size=len(batch["target"]))
        return out["loss"]

    def configure_optimizers(self):
        return torch.optim.Adam(self.model.annotator.parameters(), lr=self.lr)

    @torch.no_grad()
    def diagnostics(self, loader, max_batches: int = 4) -> dict[str, float]:
        """On validation examples: mean ||t - s_i|| for i = 0..l (the state's approach to the target)
        and the number of distinct thinking tokens used."""
        dist, used, n = None, set(), 0
        for b, batch in enumerate(loader):
            if b >= max_batches:
                break
            s0, t, out = self._run(batch)
            d = torch.cat([(t - s0).norm(dim=-1, keepdim=True), (t.unsqueeze(1) - out["states"]).norm(dim=-1)], 1)
            dist = d.sum(0) if dist is None else dist + d.sum(0)
            used |= set(out["codes"].flatten().tolist())
            n += len(t)
        res = {f"distance_step{i}": float(v) / max(n, 1) for i, v in enumerate(dist.tolist())} if dist is not None else {}
        return res | {"distinct_thinking_tokens": len(used)}
