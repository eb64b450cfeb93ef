"""How often the sliced DeepSeek checkpoint routes like the authors' rule (issue 13 item 7).

Reference: mask mode with the authors' rule (`apply_expert_mask(..., rule="authors")`: their sglang
`biased_grouped_topk`, groups chosen from all 256 experts' biased scores, pruned experts masked
afterwards). Variant: the sliced, stock-loadable checkpoint written by `prune_checkpoint`; with an
unbalanced mask (every real one) its config falls back to `n_group = topk_group = 1`, i.e. top-8
over the kept experts' biased scores. Also shown: `rule="kept_groups"` (pruned experts excluded
before the group scores; our earlier mask mode) and the unmasked model.

Model: a tiny random-init DeepSeek-V3 (256 routed experts in 8 groups, 4 groups chosen, top-8,
sigmoid router with correction bias, routed_scaling_factor 2.5, one shared expert, one leading dense
layer), embedding sized to DeepSeek's tokenizer. Mask: rows of the authors' released AIME mask
(`expert_statistics/expert_mask/aime23_full_br_128.json` of RUCAIBox/EASYEP, 58 rows x 256, 128
kept per row, no row group-balanced), rows spread evenly over the 58 MoE layers. `--mask self`: the tiny
model's own EASY-EP mask from the same tokens instead (128 kept per layer; consistent with its router).
Tokens: DeepSeek-R1's AIME 2023 traces formatted as the authors', the first `max_tokens` of each.

Two comparisons per MoE layer and token:
  same input  the reference model's hidden state entering the layer, routed by each rule (the
              sliced model's own router module, ids mapped back to the original numbering);
  end to end  each model runs on its own (the sliced checkpoint reloaded with AutoModelForCausalLM),
              so differences in earlier layers propagate.
Metrics: exact agreement of the chosen set, mean Jaccard |A&B| / |A|B|, mean |A&B| / k; and how often
the authors' rule picks a pruned expert (their 0.0 fill lets that happen when fewer than k kept
experts of the chosen groups have a positive score; it never did here if 0).

    python -m rucai.easyep.routing_agreement --mask aime23_full_br_128.json \\
        --out experiments/easyep/results/routing_agreement
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from rucai.errors import UserError

log = logging.getLogger(__name__)


def set_metrics(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """a, b: [T, k] expert ids. Exact set agreement, mean Jaccard, mean overlap / k."""
    T, k = a.shape
    inter = (a.unsqueeze(-1) == b.unsqueeze(-2)).any(-1).sum(-1).double()  # [T]
    union = 2 * k - inter
    return {"agree": float((inter == k).double().mean()), "jaccard": float((inter / union).mean()),
            "overlap": float((inter / k).mean()), "tokens": T}


def mask_rows(path: Path, n_layers: int) -> tuple[list[int], list[list[int]]]:
    """(row indices used, kept ids per used row) from the authors' bare mask (rows of 0/1) or a mask
    JSON of `easyep.score`; rows spread evenly over the file's rows."""
    if not path.is_file():
        raise UserError(f"{path} not found; get the authors' mask: RUCAIBox/EASYEP "
                        "expert_statistics/expert_mask/aime23_full_br_128.json")
    obj = json.loads(path.read_text())
    rows = obj if isinstance(obj, list) else obj["mask"]
    n = len(rows)
    idx = sorted({round(i * (n - 1) / max(1, n_layers - 1)) for i in range(n_layers)})
    if len(idx) != n_layers:
        raise UserError(f"mask has {n} rows; cannot spread {n_layers} layers over them")
    return idx, [[e for e, v in enumerate(rows[i]) if v] for i in idx]


def group_counts(ids: list[int], n_experts: int, n_group: int) -> list[int]:
    per = n_experts // n_group
    return [sum(1 for e in ids if e // per == g) for g in range(n_group)]


class _Capture:
    """Forward hooks on every MoE router: its input h and its chosen ids, per forward pass."""

    def __init__(self, blocks: dict[int, Any]):
        self.h: dict[int, list[torch.Tensor]] = {li: [] for li in blocks}
        self.ids: dict[int, list[torch.Tensor]] = {li: [] for li in blocks}
        self.handles = []
        for li, b in blocks.items():
            self.handles.append(b.gate.register_forward_hook(self._hook(li)))

    def _hook(self, li: int):
        def hook(module, args, output):
            self.h[li].append(args[0].detach().reshape(-1, args[0].shape[-1]).clone())
            self.ids[li].append(output[2].detach().clone())
        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


@torch.no_grad()
def run(mask: Path, traces: Path, out: Path, work: Path, layers: int = 8, hidden: int = 64, moe_inter: int = 32,
        max_tokens: int = 512, seed: int = 0, tokenizer: str = "deepseek-v3") -> dict[str, Any]:
    from rucai.easyep.adapters import for_model, kept_groups_topk
    from rucai.easyep.data import ChatTraces, resolve_tokenizer
    from rucai.easyep.prune import apply_expert_mask, prune_checkpoint
    from rucai.easyep.toy import tiny_model
    from rucai.runtime import load_causal_lm, load_tokenizer
    from rucai.utils.io import atomic_write_json

    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    tok = load_tokenizer(resolve_tokenizer(tokenizer))
    E, G, TG, K = 256, 8, 4, 8
    model = tiny_model("deepseek_v3", seed=seed, hidden=hidden, layers=layers, experts=E, top_k=K, moe_inter=moe_inter,
                       n_group=G, topk_group=TG, vocab=len(tok), pad_token_id=tok.eos_token_id)
    adapter = for_model(model)
    blocks = adapter.moe_blocks(model)
    texts = ChatTraces(str(traces)).texts(tok)
    seqs = [tok(t, add_special_tokens=False)["input_ids"][:max_tokens] for t in texts]
    if str(mask) == "self":  # this model's own EASY-EP mask from the same traces (128 of 256 per layer)
        from rucai.easyep.scoring import score_texts
        from rucai.easyep.selection import topk_keep

        sc = score_texts(model, tok, texts, batch_size=1, max_length=max_tokens, add_special_tokens=False)
        keep = topk_keep(sc.easyep, sc.layers, E // 2)
        rows_used = list(range(len(sc.layers)))
    else:
        rows_used, kept = mask_rows(mask, layers)
        keep = {li: ids for li, ids in zip(sorted(blocks), kept, strict=True)}

    def forward_all(m: Any, blks: dict[int, Any]) -> _Capture:
        cap = _Capture(blks)
        for s in seqs:
            m(input_ids=torch.tensor([s]), use_cache=False)
        cap.remove()
        return cap

    full = forward_all(model, blocks)                       # unmasked
    handle = apply_expert_mask(model, keep, rule="authors")  # the reference
    ref = forward_all(model, blocks)
    handle.remove()
    src = work / "full"
    model.save_pretrained(src)
    summary = prune_checkpoint(src, work / "sliced", keep, overwrite=True)
    sliced = load_causal_lm(work / "sliced", None, dtype="float32", device="cpu").eval()
    sl_blocks = adapter.moe_blocks(sliced)
    sl_cfg = sliced.config
    e2e = forward_all(sliced, sl_blocks)

    per_layer = []
    agg: dict[str, list[dict[str, float]]] = {}
    for li in sorted(blocks):
        kid = torch.tensor(keep[li])
        kmask = torch.zeros(E, dtype=torch.bool)
        kmask[kid] = True
        h = torch.cat(ref.h[li])
        r_ids = torch.cat(ref.ids[li])
        gate = blocks[li].gate
        # same input: the sliced model's own router module on the reference hidden states
        s_ids = kid[sl_blocks[li].gate(h)[2]]
        logits = torch.nn.functional.linear(h.float(), gate.weight.float())
        kg_ids = kept_groups_topk(logits, gate.e_score_correction_bias, kmask, K, G, TG, True)[1]
        f_ids = torch.cat(full.ids[li])
        e_ids = kid[torch.cat(e2e.ids[li])]
        pairs = {"sliced_same_input": s_ids, "kept_groups_same_input": kg_ids, "sliced_end_to_end": e_ids,
                 "unmasked_full_model": f_ids}
        row: dict[str, Any] = {"layer": li, "mask_row": rows_used[sorted(blocks).index(li)],
                               "group_counts": group_counts(keep[li], E, G),
                               "ref_picks_pruned": float((~kmask[r_ids]).any(-1).double().mean())}
        for name, ids in pairs.items():
            mtr = set_metrics(r_ids, ids)
            agg.setdefault(name, []).append(mtr)
            row |= {f"{name}/{k}": v for k, v in mtr.items() if k != "tokens"}
        row["tokens"] = int(r_ids.shape[0])
        per_layer.append(row)

    def mean(name: str, key: str) -> float:
        return sum(m[key] for m in agg[name]) / len(agg[name])

    overall = {f"{name}/{key}": mean(name, key) for name in agg for key in ("agree", "jaccard", "overlap")}
    overall |= {"ref_picks_pruned": sum(r["ref_picks_pruned"] for r in per_layer) / len(per_layer),
                "tokens_per_layer": per_layer[0]["tokens"], "moe_layers": len(per_layer),
                "sliced_config": {"n_routed_experts": sl_cfg.n_routed_experts, "n_group": sl_cfg.n_group,
                                  "topk_group": sl_cfg.topk_group},
                "prune_notes": summary["config_notes"], "seconds": time.perf_counter() - t0}
    with open(out / "per_layer.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(per_layer[0]))
        w.writeheader()
        for r in per_layer:
            w.writerow(r | {"group_counts": " ".join(map(str, r["group_counts"]))})
    atomic_write_json(out / "metrics.json", overall)
    return overall


def main(argv: list[str] | None = None) -> None:
    import sys

    ap = argparse.ArgumentParser(description="routing agreement: authors' rule vs the sliced DeepSeek checkpoint")
    ap.add_argument("--mask", required=True, help="the authors' aime23_full_br_128.json (58 rows of 256 0/1), or "
                    "'self': the tiny model's own EASY-EP mask (top 128 per layer) from the same traces")
    ap.add_argument("--traces", default=str(Path(os.environ.get("RUCAI_DATA_DIR", "../shared/data"))
                                             / "r1_aime23_traces" / "aime23_r1_traces.jsonl"))
    ap.add_argument("--out", default="experiments/easyep/results/routing_agreement")
    ap.add_argument("--work", default="outputs/easyep/routing_agreement_work", help="checkpoints (not committed)")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--moe-inter", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = vars(a) | {"command": "python -m rucai.easyep.routing_agreement " + " ".join(sys.argv[1:] if argv is None else argv),
                     "experts": 256, "n_group": 8, "topk_group": 4, "top_k": 8, "routed_scaling_factor": 2.5,
                     "machine": f"{platform.machine()} {os.cpu_count()}-core CPU VM, no GPU", "torch": torch.__version__}
    if a.mask != "self" and Path(a.mask).is_file():
        import hashlib

        cfg["mask_sha256"] = hashlib.sha256(Path(a.mask).read_bytes()).hexdigest()
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    res = run(Path(a.mask), Path(a.traces), out, Path(a.work), a.layers, a.hidden, a.moe_inter, a.max_tokens, a.seed)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
