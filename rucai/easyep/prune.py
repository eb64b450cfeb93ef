"""Pruned checkpoints, streamed shard by shard; and the authors' mask mode.

`prune_checkpoint(src_dir, dst_dir, keep)` rewrites a Hugging Face safetensors checkpoint without
ever loading the model: each shard is opened lazily (`safe_open`), its tensors read one at a time,
pruned experts dropped, kept ones renumbered 0..k-1 in ascending order of their old ids, the
router weight (and DeepSeek's `e_score_correction_bias`) sliced to the kept rows, and the shard
written before the next is opened. Peak memory is therefore about one shard (input tensors being
copied into the output shard), whatever the model size. Both checkpoint layouts are handled:
per-expert keys (`...mlp.experts.17.gate_proj.weight`, `.weight_scale_inv` for FP8, Mixtral's
`block_sparse_moe.experts.17.w1.weight`: what the hub and transformers' `save_pretrained` write)
and fused 3-D tensors (`...experts.gate_up_proj [E, 2I, H]`, sliced on dim 0).
`config.json` gets the new expert count (and DeepSeek's group settings, see adapters); every other
non-weight file (tokenizer, generation config, remote code) is copied; a new index is written, plus
`easyep_pruning.json` recording the keep map and the config notes.

Mask mode (`apply_expert_mask(model, keep)`): the model keeps all experts and its full router;
pruned experts are masked out of the router's choice before top-k. This is the authors' "quick
evaluation" mode and, for DeepSeek-V3/R1, the reference routing (`rule="authors"`: their sglang
`biased_grouped_topk`, group scores over all 256 experts, pruned ones masked afterwards; the
authors' "actual pruning" engine routes the same way with the compact expert index). The sliced
checkpoint (`prune_checkpoint`) is a named variant: stock-loadable, but for DeepSeek it can only
route with the kept experts' scores (`rule="kept_groups"` when every group keeps the same count,
else top-k over all kept experts with `n_group = topk_group = 1`). For softmax families mask mode
equals the sliced checkpoint when the family renormalises the top-k weights (Qwen3-MoE, Mixtral).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

from rucai.errors import UserError

log = logging.getLogger(__name__)

INDEX = "model.safetensors.index.json"
_PER_EXPERT = re.compile(r"^(?P<pre>.*?layers\.(?P<layer>\d+)\.(?P<block>\w+)\.experts\.)(?P<e>\d+)(?P<rest>\..+)$")
_FUSED = re.compile(r"^(?P<pre>.*?layers\.(?P<layer>\d+)\.(?P<block>\w+)\.experts\.)(?P<name>[A-Za-z_][\w.]*)$")
_ROUTER = re.compile(r"^.*?layers\.(?P<layer>\d+)\.(?P<block>\w+)\.gate\.(?P<name>weight|bias|e_score_correction_bias)$")


def _source_shards(src: Path) -> tuple[list[str], dict[str, str] | None]:
    idx = src / INDEX
    if idx.is_file():
        wm = json.loads(idx.read_text())["weight_map"]
        return sorted(set(wm.values())), wm
    if (src / "model.safetensors").is_file():
        return ["model.safetensors"], None
    raise UserError(f"{src} has neither {INDEX} nor model.safetensors; give a Hugging Face safetensors checkpoint")


def plan_key(key: str, keep: dict[int, list[int]], block_names: tuple[str, ...], n_layers: int | None):
    """What to do with one tensor: ("copy",), ("drop",), ("rename", new_key) or ("slice", ids)."""
    m = _PER_EXPERT.match(key)
    if m and m["block"] in block_names:
        li, e = int(m["layer"]), int(m["e"])
        if li not in keep:
            return ("drop",) if n_layers is not None and li >= n_layers else ("missing", li)
        ids = keep[li]
        if e not in ids:
            return ("drop",)
        return ("rename", f"{m['pre']}{ids.index(e)}{m['rest']}")
    m = _FUSED.match(key)
    if m and m["block"] in block_names:
        li = int(m["layer"])
        if li not in keep:
            return ("drop",) if n_layers is not None and li >= n_layers else ("missing", li)
        return ("slice", keep[li])
    m = _ROUTER.match(key)
    if m and m["block"] in block_names:
        li = int(m["layer"])
        if li not in keep:
            return ("drop",) if n_layers is not None and li >= n_layers else ("missing", li)
        return ("slice", keep[li])
    return ("copy",)


def prune_checkpoint(src_dir: str | Path, dst_dir: str | Path, keep: Any, first_layer: int | None = None,
                     overwrite: bool = False) -> dict[str, Any]:
    """Write a pruned copy of the checkpoint in `src_dir` to `dst_dir`; return a summary dict.

    `keep`: {MoE layer index: [expert ids to keep]} or a path to the mask JSON (see
    `rucai.easyep.selection.load_keep`). Every MoE layer of the model must be listed, each with
    the same count. Expert tensors of layers beyond `num_hidden_layers` (DeepSeek's multi-token
    prediction layer, unused by `AutoModelForCausalLM` and by vLLM without speculative decoding)
    are dropped.
    """
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    from rucai.easyep.adapters import for_model_type
    from rucai.easyep.selection import load_keep

    src, dst = Path(src_dir), Path(dst_dir)
    if not (src / "config.json").is_file():
        raise UserError(f"{src}/config.json not found; src_dir must be a Hugging Face checkpoint folder")
    if dst.resolve() == src.resolve():
        raise UserError("dst_dir must differ from src_dir")
    if dst.exists() and any(dst.iterdir()) and not overwrite:
        raise UserError(f"{dst} exists and is not empty; remove it or pass overwrite=True")
    dst.mkdir(parents=True, exist_ok=True)
    for stale in [*dst.glob("*.safetensors"), dst / INDEX]:  # overwrite: no shard of an older run may survive
        stale.unlink(missing_ok=True)
    config = json.loads((src / "config.json").read_text())
    cfg_text = config.get("text_config", config)  # multimodal wrappers keep the LM under text_config
    adapter = for_model_type(cfg_text.get("model_type", config.get("model_type")))
    keep = load_keep(keep, first_layer=first_layer)
    E = adapter.num_experts(cfg_text)
    for li, ids in keep.items():
        bad = [e for e in ids if not 0 <= e < E]
        if bad:
            raise UserError(f"layer {li}: expert ids {bad[:5]} out of range 0..{E - 1}")
    n_layers = cfg_text.get("num_hidden_layers")
    new_cfg_text, notes = adapter.pruned_config(cfg_text, keep)

    shards, _ = _source_shards(src)
    single = shards == ["model.safetensors"]
    weight_map: dict[str, str] = {}
    written: list[tuple[str, dict[str, Any]]] = []  # (tmp name, stats)
    seen_layers: set[int] = set()
    total = 0
    dropped = 0
    for shard in shards:
        out: dict[str, torch.Tensor] = {}
        with safe_open(str(src / shard), framework="pt") as f:
            meta = f.metadata() or {}
            for key in f.keys():
                action = plan_key(key, keep, adapter.checkpoint_block_names, n_layers)
                kind = action[0]
                if kind == "missing":
                    raise UserError(f"keep map lacks MoE layer {action[1]} (tensor {key}); list every MoE layer")
                if kind == "drop":
                    dropped += 1
                    continue
                m = _PER_EXPERT.match(key) or _FUSED.match(key) or _ROUTER.match(key)
                if m and kind != "copy":
                    seen_layers.add(int(m["layer"]))
                if kind == "copy":
                    out[key] = f.get_tensor(key)
                elif kind == "rename":
                    out[action[1]] = f.get_tensor(key)
                else:  # slice rows of a fused expert tensor / the router
                    ids = action[1]
                    sl = f.get_slice(key)
                    shape = sl.get_shape()
                    if shape[0] != E:
                        raise UserError(f"{key}: leading dim {shape[0]} != {E} experts; not an expert-major tensor")
                    # read only the kept rows, one contiguous run at a time
                    parts = [sl[a:b] for a, b in _runs(ids)]
                    out[key] = torch.cat(parts, dim=0).contiguous() if len(parts) > 1 else parts[0].contiguous()
        if not out:
            continue
        tmp = dst / f".easyep-part-{len(written):05d}.safetensors"
        save_file(out, str(tmp), metadata={**meta, "format": meta.get("format", "pt")})
        size = sum(t.numel() * t.element_size() for t in out.values())
        total += size
        written.append((tmp.name, {"keys": list(out), "bytes": size}))
        del out
    missing = sorted(set(keep) - seen_layers)
    if missing:
        raise UserError(f"keep map names layers {missing[:5]} that have no experts in the checkpoint")

    names = (["model.safetensors"] if single and len(written) == 1 else
             [f"model-{i + 1:05d}-of-{len(written):05d}.safetensors" for i in range(len(written))])
    for (tmp, stats), name in zip(written, names, strict=True):
        (dst / tmp).replace(dst / name)
        for k in stats["keys"]:
            weight_map[k] = name
    if not (single and len(written) == 1):
        (dst / INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, indent=2) + "\n")

    new_cfg = dict(config)
    if "text_config" in config:
        new_cfg["text_config"] = new_cfg_text
    else:
        new_cfg = new_cfg_text
    (dst / "config.json").write_text(json.dumps(new_cfg, indent=2) + "\n")
    copied = []
    for p in sorted(src.iterdir()):
        if p.is_file() and not p.name.endswith(".safetensors") and p.name not in (INDEX, "config.json", "easyep_pruning.json"):
            shutil.copy2(p, dst / p.name)
            copied.append(p.name)
    summary = {"src": str(src), "dst": str(dst), "num_experts_before": E, "num_experts_after": len(next(iter(keep.values()))),
               "layers": sorted(keep), "shards_in": len(shards), "shards_out": len(written), "bytes_out": total,
               "tensors_dropped": dropped, "config_notes": notes, "copied": copied}
    (dst / "easyep_pruning.json").write_text(json.dumps(summary | {"keep": {str(k): v for k, v in sorted(keep.items())}}, indent=2) + "\n")
    log.info("pruned %s -> %s: %d -> %d experts per layer, %d shards, %.1f MB", src, dst, E,
             summary["num_experts_after"], len(written), total / 1e6)
    return summary


def _runs(ids: list[int]) -> list[tuple[int, int]]:
    """Sorted ids -> contiguous [a, b) runs."""
    runs: list[tuple[int, int]] = []
    for e in ids:
        if runs and runs[-1][1] == e:
            runs[-1] = (runs[-1][0], e + 1)
        else:
            runs.append((e, e + 1))
    return runs


class ExpertMask:
    """Handle returned by `apply_expert_mask`; `remove()` restores the original routers."""

    def __init__(self, gates: list[Any]):
        self.gates = gates

    def remove(self) -> None:
        for g in self.gates:
            if "forward" in g.__dict__:
                del g.forward
            g.__dict__.pop("_easyep_keep", None)


def apply_expert_mask(model: Any, keep: Any, first_layer: int | None = None, rule: str | None = None) -> ExpertMask:
    """Mask mode: keep every expert in memory, route only to the kept ones (full router).

    `rule` (DeepSeek-V3/R1 only; null: "authors"): "authors" = the authors' `biased_grouped_topk`
    (groups chosen from all experts' scores, pruned experts masked afterwards; the reference),
    "kept_groups" = pruned experts excluded before the group scores as well."""
    import torch

    from rucai.easyep.adapters import for_model
    from rucai.easyep.selection import load_keep

    adapter = for_model(model)
    keep = load_keep(keep, first_layer=first_layer)
    blocks = adapter.moe_blocks(model)
    if set(keep) != set(blocks):
        raise UserError(f"keep map layers {sorted(keep)[:6]}... differ from the model's MoE layers {sorted(blocks)[:6]}...")
    E = adapter.num_experts(model.config)
    rule = rule or adapter.rules[0]
    if rule not in adapter.rules:
        raise UserError(f"mask rule {rule!r} does not apply to {type(adapter).__name__}; use one of {', '.join(adapter.rules)}")
    gates = []
    for li, block in blocks.items():
        gate = block.gate
        mask = torch.zeros(E, dtype=torch.bool, device=gate.weight.device)
        mask[torch.tensor(keep[li], dtype=torch.long)] = True
        gate._easyep_keep = mask

        def forward(hidden_states, _gate=gate):
            return adapter.route(_gate, hidden_states, _gate._easyep_keep, rule=rule)

        gate.forward = forward
        gates.append(gate)
    return ExpertMask(gates)
