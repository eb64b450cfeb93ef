"""STREAM-Rec's RL rewards, by name (`method.rl.rewards: {name: weight}`). The paper lists five
(secondary sources; exact definitions are not in them, so each formula below is ours):

  format            0 when the output parses as l thinking code tokens then a valid item, -1 otherwise
  exact_match       the run of leading item codes equal to the target's, over L (1 = the target)
  similarity        cos(s_l, t): the annotator's state after the sampled thinking tokens against the
                    target's representation (the anchor T5's views, as in the annotation)
  think_likelihood  exp(mean log p(target codes | history, sampled thinking)): how well the reasoning
                    supports the target; the group baseline of GRPO makes it relative
  think_rank        1 - (negatives scoring >= the target) / n over `rank_negatives` random items, each
                    scored by log p(item codes | history, sampled thinking)

Each takes a `Rollouts` (one row per sample) and returns a float tensor [N].
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from rucai.rl.rewards import RewardRegistry

REWARDS = RewardRegistry("streamrec reward")


@dataclass
class Rollouts:
    model: Any  # the StreamRec module (its trie, item codes, anchor, annotator, policy)
    ids: torch.Tensor  # [N, S] encoder inputs, repeated per sample
    mask: torch.Tensor
    tokens: torch.Tensor  # [N, l + L] sampled thinking tokens then item tokens
    items: torch.Tensor  # [N] the sampled item (-1: the code tuple is no item)
    target: torch.Tensor  # [N]

    @property
    def think(self) -> torch.Tensor:
        return self.tokens[:, : self.model.think_steps]


@REWARDS.register("format")
def format_reward(r: Rollouts) -> torch.Tensor:
    trie = r.model.trie
    is_code = ((r.think >= trie.offset) & (r.think < trie.vocab_size)).all(1)
    return torch.where(is_code & (r.items >= 0), 0.0, -1.0).float()


@REWARDS.register("exact_match")
def exact_match(r: Rollouts) -> torch.Tensor:
    want = r.model.item2tok[r.target]
    got = r.tokens[:, r.model.think_steps:]
    run = torch.cumprod((got == want).long(), 1).sum(1)  # leading matches
    return run.float() / want.size(1)


@REWARDS.register("similarity")
def similarity(r: Rollouts) -> torch.Tensor:
    m = r.model
    s0, t = m.anchor_views(r.ids, r.mask, r.target)
    emb = m.anchor.shared(r.think).float()
    return F.cosine_similarity(m.annotator.state_of(s0, emb), t, dim=-1)


@REWARDS.register("think_likelihood")
def think_likelihood(r: Rollouts) -> torch.Tensor:
    lp = r.model.score_items(r.ids, r.mask, r.think, r.target.unsqueeze(1)).squeeze(1)
    return torch.exp(lp / r.model.num_levels)


@REWARDS.register("think_rank")
def think_rank(r: Rollouts) -> torch.Tensor:
    m = r.model
    n = int(m.rl.get("rank_negatives", 9))
    neg = torch.randint(1, m.num_items + 1, (len(r.target), n), device=r.target.device)
    neg = torch.where(neg == r.target.unsqueeze(1), neg % m.num_items + 1, neg)  # never the target
    s = m.score_items(r.ids, r.mask, r.think, torch.cat([r.target.unsqueeze(1), neg], 1))
    return 1.0 - (s[:, 1:] >= s[:, :1]).float().sum(1) / n


def total_reward(r: Rollouts, weights: Mapping[str, float]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """({name: reward [N]} for every weighted reward, sum of weight x reward [N])."""
    if not weights:
        raise ValueError("method.rl.rewards is empty: give at least one {name: weight}")
    comps = {name: REWARDS.lookup(name)(r).float() for name, w in weights.items() if float(w) != 0.0}
    total = sum(float(weights[k]) * v for k, v in comps.items())
    return comps, total if torch.is_tensor(total) else torch.zeros(len(r.target))
