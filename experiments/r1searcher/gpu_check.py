"""GPU check of the R1-Searcher training/eval code path (no Hydra): a tiny random policy on SmolLM2's
tokenizer, BM25 over the HotpotQA pool, stage 1 -> stage 2 (hand-off) -> evaluation on CUDA with
bf16-mixed Fabric. Usage: python experiments/r1searcher/gpu_check.py <data_dir> <policy_dir> <out_dir>"""

import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from rucai.r1searcher.evaluate import evaluate
from rucai.r1searcher.rl import RLConfig, train_stage
from rucai.r1searcher.rollout import search_hf_llm
from rucai.retrieval import load_retriever
from rucai.retrieval.index import ensure_index

data, policy, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
hw = SimpleNamespace(accelerator="gpu", devices=1, strategy="auto", precision="bf16-mixed")
t = time.perf_counter()
idx = ensure_index(out / "index", "hotpotqa_contexts", data / "multihop_qa" / "hotpotqa_dev500_with_contexts.jsonl")
ret = load_retriever(idx)
print("index", len(ret.passages), round(time.perf_counter() - t, 1), "s")


def rows(name):
    return [json.loads(x) for x in (data / "multihop_qa" / f"{name}.jsonl").read_text().splitlines()]


res = {}
for stage, reward, init in (("stage1", "paper_stage1", policy), ("stage2", "paper_stage2", None)):
    cfg = RLConfig(algo="grpo" if stage == "stage1" else "reinforce_pp_baseline", reward=reward, steps=2,
                   prompts_per_step=4, n_samples=8, lr=1e-4, kl_coef=1e-3, micro_batch_size=16,
                   max_tokens_per_round=48, max_response_tokens=128, max_searches=2)
    t = time.perf_counter()
    s = train_stage(init or res["stage1"]["policy"], out / stage, rows(f"r1searcher_{stage}_train"), ret, cfg, hw,
                    None, stage)
    res[stage] = s
    print(stage, "init_from", s["init_from"], "->", s["policy"], round(time.perf_counter() - t, 1), "s")
    print(stage, "last", json.dumps(s["last"]))
# DeepSpeed ZeRO-2 (the qwen25_7b_base profile's strategy) on one GPU: one stage-2 step from stage 2's policy
hw_ds = SimpleNamespace(accelerator="gpu", devices=1, precision="bf16-mixed",
                        strategy={"_target_": "lightning.pytorch.strategies.DeepSpeedStrategy", "stage": 2})
try:
    t = time.perf_counter()
    cfg = RLConfig(reward="paper_stage2", steps=1, prompts_per_step=4, n_samples=8, lr=1e-4, micro_batch_size=16,
                   max_tokens_per_round=48, max_response_tokens=128, max_searches=2)
    s = train_stage(res["stage2"]["policy"], out / "zero2", rows("r1searcher_stage2_train"), ret, cfg, hw_ds, None, "zero2")
    print("zero2 ok", round(time.perf_counter() - t, 1), "s", json.dumps(s["last"]))
except Exception as e:  # noqa: BLE001 - report and go on to the evaluation
    print("zero2 FAILED", type(e).__name__, str(e)[:500])
llm = search_hf_llm(model=res["stage2"]["policy"], batch_size=32, device="cuda")
t = time.perf_counter()
m = evaluate(llm, llm.tokenizer, ret, data, out / "eval", ["hotpotqa_500", "bamboogle"], ["r1searcher", "rag", "naive"],
             8, max_tokens=32)
print("eval", round(time.perf_counter() - t, 1), "s", json.dumps({k: round(v, 3) for k, v in m.items()
                                                                   if k.endswith(("cover_em", "searches_per_question"))}))
print("GPU CHECK OK")
