"""STREAM-Rec's model: a TIGER (`rucai.models.tiger`) trained in one of three phases.

  pretrain  labels = [codes of the target's similar items ; target codes ; eos]
            (`targets.extended_labels`), cross-entropy over the vocabulary with temperature tau;
            decoding: the similar items' k x L tokens as a free prefix, then the item by the trie
  sft       labels = [o_1 .. o_l ; target codes ; eos], o from the frozen annotator over the frozen
            pre-trained T5 (`anchor`: encoder states for s_0, embeddings for t and the codebook);
            decoding: l free thinking tokens, then the item by the trie; optional DPO (`dpo.weight`):
            chosen [o ; target], rejected [o ; the direct (stage-1 = anchor) model's sampled item],
            reference = the anchor (`dpo_loss`)
  rl        GRPO (`rucai.rl.core`): `group_size` samples per user (thinking free, item through the
            trie), rewards by name and weight (`rewards.REWARDS`), group-normalised advantages,
            the PPO-clip surrogate (one update per batch: ratio 1), k3 KL to the frozen SFT policy

The frozen parts (anchor T5, annotator, reference T5) live in the module so checkpoints hold them;
they stay in eval mode and out of the optimizer. Validation and test: TIGER's beam search with the
phase's free prefix and its Recall/NDCG over all users.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from rucai.errors import UserError
from rucai.models.tiger import TIGER, sample_sequences
from rucai.models.trie import EOS
from rucai.streamrec.annotator import ThinkingAnnotator
from rucai.streamrec.config import PHASES
from rucai.streamrec.targets import extended_labels


class StreamRec(TIGER):
    def __init__(self, *args: Any, phase: str = "pretrain", similar: Any = None, similar_order: str = "nearest_last",
                 temperature: float = 1.0, think_steps: int = 4, annotator: Mapping[str, Any] | None = None,
                 rl: Mapping[str, Any] | None = None, dpo: Mapping[str, Any] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if phase not in PHASES:
            raise UserError(f"model.phase={phase!r}; use one of {', '.join(PHASES)}")
        self.phase = phase
        self.save_hyperparameters(ignore=["similar", "item_codes"])
        self.temperature = float(temperature)
        self.think_steps = int(think_steps)
        self.similar_order = similar_order
        if phase == "pretrain":
            if similar is None:
                raise ValueError("phase=pretrain needs `similar` ([N+1, k] similar item ids)")
            self.register_buffer("similar", torch.as_tensor(similar, dtype=torch.long), persistent=False)
        self.rl = dict(rl or {})
        self.dpo = {"weight": 0.0, "beta": 0.1, "temperature": 1.0, "direct_similar_items": 1} | dict(dpo or {})
        self.anchor = self.annotator = self.ref = None
        if phase in ("sft", "rl"):
            a = dict(annotator or {})
            self.anchor = copy.deepcopy(self.t5).requires_grad_(False).eval()
            self.annotator = ThinkingAnnotator(self.t5.config.d_model, self.think_steps, int(a.get("hidden", 256)),
                                               float(a.get("tau", 0.1)), float(a.get("beta", 0.0)),
                                               float(a.get("gamma", 1.0)), bool(a.get("straight_through", False)))
            self.annotator.requires_grad_(False).eval()
        if phase == "rl" and float(self.rl.get("kl_coef", 0.0)) > 0:
            self.ref = copy.deepcopy(self.t5).requires_grad_(False).eval()

    # -- phases ---------------------------------------------------------------------------------
    def decode_prefix(self) -> int:
        if self.phase == "pretrain":
            return int(self.similar.shape[1]) * self.num_levels
        return self.think_steps

    def train(self, mode: bool = True):
        super().train(mode)
        for m in (self.anchor, self.annotator, self.ref):
            if m is not None:
                m.eval()
        return self

    def configure_optimizers(self):
        from rucai.runtime.hardware import adam

        return adam(self, [p for p in self.t5.parameters() if p.requires_grad], lr=self.lr,
                    weight_decay=self.weight_decay, decoupled=True)

    # -- the anchor's views (stage 2's s_0, t and codebook) -----------------------------------------
    def codebook(self) -> torch.Tensor:
        """[C, D] the anchor's embeddings of the code tokens (thinking token = trie.offset + row)."""
        return self.anchor.shared.weight[self.trie.offset:self.trie.vocab_size]

    @torch.no_grad()
    def anchor_views(self, ids: torch.Tensor, mask: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(s_0 [B, D] = masked mean of the anchor's encoder states, t [B, D] = mean of its embeddings
        of the target's code tokens)."""
        h = self.anchor.get_encoder()(input_ids=ids, attention_mask=mask, return_dict=True).last_hidden_state
        m = mask.unsqueeze(-1).to(h.dtype)
        s0 = (h * m).sum(1) / m.sum(1).clamp(min=1)
        t = self.anchor.shared(self.item2tok[target]).mean(1)
        return s0.float(), t.float()

    @torch.no_grad()
    def thinking_tokens(self, ids: torch.Tensor, mask: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """[B, l] the annotated thinking tokens of a batch (token ids)."""
        s0, t = self.anchor_views(ids, mask, target)
        return self.annotator(s0, t, self.codebook().float())["codes"] + self.trie.offset

    # -- training -------------------------------------------------------------------------------
    def labels(self, batch: Mapping[str, torch.Tensor], ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        target = batch["target"]
        if self.phase == "pretrain":
            return extended_labels(self.item2tok, self.similar, target, EOS, self.similar_order)
        return torch.cat([self.thinking_tokens(ids, mask, target), self.target_tokens(target)], 1)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        ids, mask = self.model_inputs(batch)
        if self.phase == "rl":
            return self.grpo_step(batch, ids, mask)
        labels = self.labels(batch, ids, mask)
        logits = self.train_t5()(input_ids=ids, attention_mask=mask, labels=labels).logits.float()
        tau = self.temperature if self.phase == "pretrain" else 1.0
        loss = F.cross_entropy((logits / tau).view(-1, logits.size(-1)), labels.view(-1))
        if self.phase == "sft" and float(self.dpo["weight"]) > 0:
            self.log("train/sft_ce", loss.detach(), on_step=False, on_epoch=True, batch_size=len(labels))
            loss = loss + float(self.dpo["weight"]) * self.dpo_step(batch["target"], ids, mask, labels)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(labels))
        return loss

    # -- DPO against the direct model (stage 2, optional) ---------------------------------------
    @torch.no_grad()
    def direct_items(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B] one item per user from the direct (stage-1) model: its similar-item prefix free, then
        the item through the trie."""
        prefix = int(self.dpo["direct_similar_items"]) * self.num_levels
        items, _ = sample_sequences(self.anchor, self._trie(), ids, mask, 1, prefix,
                                    float(self.dpo["temperature"]), True)
        return items[:, 0]

    def dpo_step(self, target: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
                 chosen: torch.Tensor) -> torch.Tensor:
        direct = self.direct_items(ids, mask)
        keep = direct != target
        bsz = len(target)
        self.log("train/dpo_pairs", keep.float().mean(), on_step=False, on_epoch=True, batch_size=bsz)
        if not bool(keep.any()):
            return chosen.new_zeros((), dtype=torch.float32)
        ids, mask, chosen, direct = ids[keep], mask[keep], chosen[keep], direct[keep]
        rejected = torch.cat([chosen[:, :self.think_steps], self.target_tokens(direct)], 1)
        enc = self.t5.get_encoder()(input_ids=ids, attention_mask=mask, return_dict=True).last_hidden_state
        pol = [self.token_logprobs(self.t5, enc, mask, y).sum(-1) for y in (chosen, rejected)]
        with torch.no_grad():
            renc = self.anchor.get_encoder()(input_ids=ids, attention_mask=mask, return_dict=True).last_hidden_state
            ref = [self.token_logprobs(self.anchor, renc, mask, y).sum(-1) for y in (chosen, rejected)]
        loss, margin = dpo_loss(pol[0], pol[1], ref[0], ref[1], float(self.dpo["beta"]))
        self.log("train/dpo", loss.detach(), on_step=False, on_epoch=True, batch_size=bsz)
        self.log("train/dpo_margin", margin.mean(), on_step=False, on_epoch=True, batch_size=bsz)
        return loss

    # -- RL -------------------------------------------------------------------------------------
    def token_logprobs(self, t5: Any, enc: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """log p(labels_t | labels_<t, encoder states) [N, T] (teacher forcing)."""
        from transformers.modeling_outputs import BaseModelOutput

        logits = t5(encoder_outputs=BaseModelOutput(last_hidden_state=enc), attention_mask=mask, labels=labels).logits
        return torch.log_softmax(logits.float(), -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)

    def grpo_step(self, batch: Mapping[str, torch.Tensor], ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        from rucai.rl.core import group_advantages, kl_k3, policy_loss
        from rucai.streamrec.rewards import Rollouts, total_reward

        n = int(self.rl.get("group_size", 8))
        target = batch["target"]
        self.t5.eval()
        items, toks = sample_sequences(self.t5, self._trie(), ids, mask, n, self.think_steps,
                                       float(self.rl.get("temperature", 1.0)),
                                       bool(self.rl.get("constrained_sampling", True)))
        self.t5.train()
        N = len(target) * n
        ro = Rollouts(model=self, ids=ids.repeat_interleave(n, 0), mask=mask.repeat_interleave(n, 0),
                      tokens=toks.reshape(N, -1), items=items.reshape(N), target=target.repeat_interleave(n, 0))
        comps, reward = total_reward(ro, self.rl.get("rewards") or {})
        adv = torch.tensor(group_advantages(reward.tolist(), n, "grpo"), device=ids.device)
        enc = self.t5.get_encoder()(input_ids=ro.ids, attention_mask=ro.mask, return_dict=True).last_hidden_state
        lp = self.token_logprobs(self.t5, enc, ro.mask, ro.tokens)
        m = torch.ones_like(lp)
        loss, _ = policy_loss(lp, lp.detach(), adv.unsqueeze(1).expand_as(lp), m, float(self.rl.get("clip_eps", 0.2)))
        kl = torch.zeros((), device=lp.device)
        if self.ref is not None:
            with torch.no_grad():
                renc = self.ref.get_encoder()(input_ids=ro.ids, attention_mask=ro.mask, return_dict=True).last_hidden_state
                rlp = self.token_logprobs(self.ref, renc, ro.mask, ro.tokens)
            kl = (kl_k3(lp, rlp) * m).sum(-1).div(m.sum(-1)).mean()
            loss = loss + float(self.rl["kl_coef"]) * kl
        bsz = len(target)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=bsz)
        self.log("train/reward", reward.mean(), on_step=True, on_epoch=True, prog_bar=True, batch_size=bsz)
        self.log("train/kl", kl.detach(), on_step=False, on_epoch=True, batch_size=bsz)
        self.log("train/hit", (ro.items == ro.target).float().mean(), on_step=False, on_epoch=True, batch_size=bsz)
        for k, v in comps.items():
            self.log(f"train/reward_{k}", v.mean(), on_step=False, on_epoch=True, batch_size=bsz)
        return loss

    @torch.no_grad()
    def score_items(self, ids: torch.Tensor, mask: torch.Tensor, think: torch.Tensor,
                    items: torch.Tensor) -> torch.Tensor:
        """Sum of log p over each candidate item's L code tokens after the given thinking tokens:
        ids/mask [N, S], think [N, l], items [N, c] -> [N, c] (the current policy, no dropout)."""
        N, c = items.shape
        was = self.t5.training
        self.t5.eval()
        enc = self.t5.get_encoder()(input_ids=ids, attention_mask=mask, return_dict=True).last_hidden_state
        labels = torch.cat([think.repeat_interleave(c, 0), self.item2tok[items.reshape(-1)]], 1)
        lp = self.token_logprobs(self.t5, enc.repeat_interleave(c, 0), mask.repeat_interleave(c, 0), labels)
        self.t5.train(was)
        return lp[:, think.size(1):].sum(-1).view(N, c)


def dpo_loss(logp_chosen: torch.Tensor, logp_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """DPO (Rafailov et al. 2023) on sequence log-probabilities [N]: mean of
    -log sigmoid(beta ((pi_w - ref_w) - (pi_l - ref_l))), and the (detached) margins."""
    margin = beta * ((logp_chosen - ref_chosen) - (logp_rejected - ref_rejected))
    return -F.logsigmoid(margin).mean(), margin.detach()


def load_t5_from(model: StreamRec, ckpt: str, into: Sequence[str] = ("t5",)) -> None:
    """Copy the `t5.*` weights of a Lightning checkpoint (a TIGER or StreamRec) into each named T5 of
    `model` (`t5`, `anchor`, `ref`)."""
    sd = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    t5 = {k[len("t5."):]: v for k, v in sd.items() if k.startswith("t5.")}
    if not t5:
        raise UserError(f"{ckpt} holds no T5 weights (t5.*): not a TIGER or STREAM-Rec checkpoint")
    for name in into:
        getattr(model, name).load_state_dict(t5)
