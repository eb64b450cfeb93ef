"""One small adapter per MoE family, as transformers 5.x implements them.

Every supported family has the same module layout (checked in transformers 5.24 source):
decoder layer `model.model.layers[i]` with `post_attention_layernorm` (its *input* is the residual
stream x entering the MoE sub-layer) and `mlp` = the sparse MoE block holding
  - `mlp.gate`: the router, `forward(h[T,H]) -> (router_logits, top_k_weights[T,k], top_k_index[T,k])`
  - `mlp.experts`: fused experts, `gate_up_proj [E, 2I, H]`, `down_proj [E, H, I]`,
    `forward(h[T,H], top_k_index, top_k_weights) -> sum_k w * E_i(h)` (routed experts only).
Shared experts (DeepSeek `mlp.shared_experts`, Qwen2-MoE `mlp.shared_expert`) sit beside them and are
never touched. What differs per family is the routing rule (needed for mask mode and for the
reference computation in tests), the config key holding the expert count, and the checkpoint key
of the MoE block (Mixtral checkpoints still say `block_sparse_moe`).

A new family is one subclass: set `model_types`, `expert_count_keys`, `checkpoint_block_names`, and
override `route()` if its router is not softmax-top-k.
"""

from __future__ import annotations

from typing import Any

from rucai.errors import UserError


class MoEAdapter:
    model_types: tuple[str, ...] = ()
    # config keys that may hold the routed-expert count (transformers' attribute maps alias them;
    # hub configs and `save_pretrained` may use either spelling)
    expert_count_keys: tuple[str, ...] = ("num_experts", "num_local_experts")
    # names the MoE block has in Hugging Face checkpoints (state-dict keys), e.g. "mlp"
    checkpoint_block_names: tuple[str, ...] = ("mlp",)
    block_attr: str = "mlp"

    # ---- model structure -------------------------------------------------------------------
    def layers(self, model: Any) -> Any:
        inner = getattr(model, "model", model)
        return inner.layers

    def moe_blocks(self, model: Any) -> dict[int, Any]:
        """{decoder layer index: sparse MoE block} (dense layers skipped)."""
        out = {}
        for i, layer in enumerate(self.layers(model)):
            block = getattr(layer, self.block_attr, None)
            if block is not None and hasattr(block, "experts") and hasattr(block, "gate"):
                out[i] = block
        return out

    def residual_input_module(self, layer: Any) -> Any:
        """The module whose input is the residual stream x entering the MoE sub-layer."""
        return layer.post_attention_layernorm

    def num_experts(self, config: Any) -> int:
        for key in self.expert_count_keys:
            v = config.get(key) if isinstance(config, dict) else getattr(config, key, None)
            if v is not None:
                return int(v)
        raise UserError(f"config has none of {self.expert_count_keys}; is this a {type(self).__name__} model?")

    def top_k(self, config: Any) -> int:
        return int(_cfg_get(config, "num_experts_per_tok"))

    # ---- routing ---------------------------------------------------------------------------
    rules: tuple[str, ...] = ("softmax",)

    def route(self, gate: Any, h: Any, keep: Any = None, rule: str | None = None):
        """Reproduce `gate.forward(h)`; with `keep` (bool [E]) pruned experts cannot be chosen
        (`rule`: only DeepSeek has more than one mask rule; ignored here).

        Softmax-top-k families: probabilities over all experts (the full router), pruned ones
        zeroed before top-k, then renormalised when the family does (`norm_topk_prob`).
        """
        import torch
        import torch.nn.functional as F

        h = h.reshape(-1, gate.hidden_dim)
        logits = F.linear(h, gate.weight)
        probs = torch.softmax(logits.float(), dim=-1)
        if keep is not None:
            probs = probs.masked_fill(~keep.to(probs.device), 0.0)
        top_w, top_i = torch.topk(probs, gate.top_k, dim=-1)
        if self.renormalises(gate):
            top_w = top_w / top_w.sum(dim=-1, keepdim=True)
        return logits, self.cast_weights(top_w, logits), top_i

    def renormalises(self, gate: Any) -> bool:
        return bool(getattr(gate, "norm_topk_prob", False))

    def cast_weights(self, w: Any, logits: Any) -> Any:
        return w.to(logits.dtype)

    # ---- checkpoint rewrite ----------------------------------------------------------------
    def pruned_config(self, config: dict[str, Any], keep: dict[int, list[int]]) -> tuple[dict[str, Any], list[str]]:
        """Config dict of the pruned model and notes on what changed."""
        n = _common_count(keep)
        k = int(config.get("num_experts_per_tok", 1))
        if n < k:
            raise UserError(f"keeping {n} experts per layer but the model routes to {k}; keep at least {k}")
        new = dict(config)
        keys = [key for key in self.expert_count_keys if config.get(key) is not None]
        for key in keys:
            new[key] = n
        return new, [f"{key}: {config[key]} -> {n}" for key in keys]


class SoftmaxAdapter(MoEAdapter):
    pass


class Qwen2MoeAdapter(SoftmaxAdapter):
    """Qwen2-MoE: softmax top-k, `norm_topk_prob` (False in Qwen1.5-MoE), one gated shared expert."""

    model_types = ("qwen2_moe",)


class Qwen3MoeAdapter(SoftmaxAdapter):
    """Qwen3-MoE: softmax top-k, `norm_topk_prob` (True in the released models), no shared expert."""

    model_types = ("qwen3_moe",)


class OlmoeAdapter(SoftmaxAdapter):
    """OLMoE: softmax top-k, `norm_topk_prob` False in the released model."""

    model_types = ("olmoe",)


class MixtralAdapter(SoftmaxAdapter):
    """Mixtral: softmax top-k, always renormalised over the selected experts; weights stay fp32."""

    model_types = ("mixtral",)
    checkpoint_block_names = ("block_sparse_moe", "mlp")

    def renormalises(self, gate: Any) -> bool:
        return True

    def route(self, gate: Any, h: Any, keep: Any = None, rule: str | None = None):
        import torch
        import torch.nn.functional as F

        h = h.reshape(-1, gate.hidden_dim)
        logits = F.linear(h, gate.weight)
        probs = torch.softmax(logits.float(), dim=-1)
        if keep is not None:
            probs = probs.masked_fill(~keep.to(probs.device), 0.0)
        top_w, top_i = torch.topk(probs, gate.top_k, dim=-1)
        top_w = top_w / top_w.sum(dim=-1, keepdim=True)
        return logits, top_w, top_i


class DeepseekV3Adapter(MoEAdapter):
    """DeepSeek-V3/R1: sigmoid scores; `e_score_correction_bias` added for *selection* only;
    group-limited top-k (groups ranked by the sum of their top-2 biased scores, `topk_group` of
    `n_group` kept); weights = unbiased sigmoid scores of the chosen experts, renormalised over them
    (`norm_topk_prob`) and multiplied by `routed_scaling_factor`. Leading `first_k_dense_replace`
    layers are dense; one shared expert per MoE layer."""

    model_types = ("deepseek_v3",)
    expert_count_keys = ("n_routed_experts",)

    # mask-mode routing rules (with a keep mask; without one both equal the stock router)
    rules = ("authors", "kept_groups")

    def route(self, gate: Any, h: Any, keep: Any = None, rule: str = "authors"):
        """`rule="authors"` (the reference): the authors' `biased_grouped_topk` (their sglang fork,
        `sglang_{full,pruned}/sglang/srt/layers/moe/topk.py`): group scores over ALL experts, pruned
        experts masked only afterwards. `rule="kept_groups"`: pruned experts excluded before the
        group scores too (what a sliced checkpoint that keeps `n_group` computes when every group
        keeps the same count)."""
        import torch.nn.functional as F

        h = h.reshape(-1, gate.hidden_dim)
        logits = F.linear(h.float(), gate.weight.float())
        if keep is not None and rule == "authors":
            w, i = authors_biased_grouped_topk(logits, gate.e_score_correction_bias, keep.to(logits.device),
                                               gate.top_k, gate.num_group, gate.topk_group, gate.norm_topk_prob)
            return logits, w * gate.routed_scaling_factor, i
        if keep is not None and rule != "kept_groups":
            raise UserError(f"unknown DeepSeek mask rule {rule!r}; use one of {', '.join(self.rules)}")
        w, i = kept_groups_topk(logits, gate.e_score_correction_bias, keep, gate.top_k, gate.num_group,
                                gate.topk_group, gate.norm_topk_prob)
        return logits, w * gate.routed_scaling_factor, i

    def pruned_config(self, config: dict[str, Any], keep: dict[int, list[int]]) -> tuple[dict[str, Any], list[str]]:
        new, notes = super().pruned_config(config, keep)
        n = _common_count(keep)
        e = self.num_experts(config)
        g = int(config.get("n_group") or 1)
        if g > 1:
            # Kept ids are renumbered in ascending order, so group j's survivors stay contiguous.
            # Group-limited routing survives exactly only when every group keeps the same count.
            per = e // g
            balanced = all(
                len({sum(1 for x in ids if x // per == j) for j in range(g)}) == 1 for ids in keep.values()
            )
            if balanced:
                notes.append(f"n_group={g} kept: every group keeps {n // g} experts in every layer")
            else:
                new["n_group"] = 1
                new["topk_group"] = 1
                notes.append(
                    f"n_group {g} -> 1, topk_group {config.get('topk_group')} -> 1: the kept experts are spread "
                    "unevenly over the original groups, which a pruned config cannot express; routing is top-k "
                    "over all kept experts (mask mode, rule=authors, keeps the authors' group-limited routing)"
                )
        return new, notes


def authors_biased_grouped_topk(logits: Any, bias: Any, keep: Any, top_k: int, n_group: int, topk_group: int,
                                renormalize: bool):
    """The authors' DeepSeek routing with an expert mask, step by step as in their sglang fork's
    `biased_grouped_topk` (RUCAIBox/EASYEP, sglang_pruned/sglang/srt/layers/moe/topk.py):

      scores = sigmoid(logits)                       all E router rows are kept
      choice = scores + correction_bias
      group score = sum of the top-2 `choice` values in the group, over ALL its experts (pruned too)
      the `topk_group` best groups are chosen
      tmp = choice with experts outside the chosen groups set to 0.0, then times keep (pruned -> 0.0)
      ids = top-k of tmp;  weights = scores[ids] (unbiased), renormalised when `renormalize`
    The MoE output is then multiplied by `routed_scaling_factor` (their `DeepseekV2MoE.forward`);
    callers multiply the weights by it. Masked entries are 0.0, not -inf, exactly as theirs: a
    pruned or out-of-group expert can still be picked when fewer than top_k kept experts of the
    chosen groups have a positive `choice` (their pruned engine then maps its id to -1).
    Returns (weights [T, k] fp32, ids [T, k])."""
    import torch

    scores = logits.float().sigmoid()
    T, E = scores.shape
    choice = scores + bias.float().unsqueeze(0)
    group_scores = choice.view(T, n_group, -1).topk(2, dim=-1)[0].sum(dim=-1)
    group_idx = torch.topk(group_scores, k=topk_group, dim=-1, sorted=False)[1]
    group_mask = torch.zeros_like(group_scores).scatter_(1, group_idx, 1)
    score_mask = group_mask.unsqueeze(-1).expand(T, n_group, E // n_group).reshape(T, E)
    tmp = choice.masked_fill(~score_mask.bool(), 0.0)
    tmp = tmp * keep.bool()
    ids = torch.topk(tmp, k=top_k, dim=-1, sorted=False)[1]
    w = scores.gather(1, ids)
    if renormalize:
        w = w / w.sum(dim=-1, keepdim=True)
    return w, ids


def kept_groups_topk(logits: Any, bias: Any, keep: Any, top_k: int, n_group: int, topk_group: int,
                     renormalize: bool):
    """Stock DeepSeek-V3 routing (transformers' `DeepseekV3TopkRouter`) over the kept experts only:
    pruned experts get -inf before the group scores, so they neither lift their group nor get
    chosen. With `keep=None` it is the stock router; with `n_group = topk_group = 1` it is what the
    sliced checkpoint's fallback config computes (top-k over all kept experts)."""
    import torch

    scores = logits.float().sigmoid()
    T, E = scores.shape
    choice = scores + bias.float().unsqueeze(0)
    if keep is not None:
        choice = choice.masked_fill(~keep.to(choice.device).bool(), float("-inf"))
    grouped = choice.view(T, n_group, E // n_group)
    finite = torch.where(torch.isfinite(grouped), grouped, torch.full_like(grouped, -1e9))
    group_scores = finite.topk(min(2, E // n_group), dim=-1)[0].sum(dim=-1)
    group_idx = torch.topk(group_scores, k=topk_group, dim=-1, sorted=False)[1]
    group_mask = torch.zeros_like(group_scores).scatter_(1, group_idx, 1)
    score_mask = group_mask.unsqueeze(-1).expand(T, n_group, E // n_group).reshape(T, E)
    choice = choice.masked_fill(~score_mask.bool(), float("-inf"))
    ids = torch.topk(choice, k=top_k, dim=-1, sorted=False)[1]
    w = scores.gather(1, ids)
    if renormalize:
        w = w / (w.sum(dim=-1, keepdim=True) + 1e-20)
    return w, ids


ADAPTERS: tuple[type[MoEAdapter], ...] = (
    DeepseekV3Adapter, Qwen2MoeAdapter, Qwen3MoeAdapter, MixtralAdapter, OlmoeAdapter,
)


def for_model_type(model_type: str) -> MoEAdapter:
    for cls in ADAPTERS:
        if model_type in cls.model_types:
            return cls()
    known = sorted(t for c in ADAPTERS for t in c.model_types)
    raise UserError(f"no EASY-EP adapter for model_type={model_type!r}; supported: {', '.join(known)} "
                    "(add a MoEAdapter subclass in rucai/easyep/adapters.py)")


def for_model(model: Any) -> MoEAdapter:
    return for_model_type(model.config.model_type)


def _cfg_get(config: Any, key: str) -> Any:
    return config[key] if isinstance(config, dict) else getattr(config, key)


def _common_count(keep: dict[int, list[int]]) -> int:
    counts = {len(v) for v in keep.values()}
    if len(counts) != 1:
        raise UserError(f"every MoE layer must keep the same number of experts (got {sorted(counts)}); "
                        "select with one k for all layers")
    return counts.pop()
