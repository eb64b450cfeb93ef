"""GPU check of the R1-Searcher training/eval code path (no Hydra): a tiny random policy on SmolLM2's
tokenizer, BM25 over the HotpotQA pool, stage 1 -> stage 2 (hand-off) -> evaluation on CUDA with
bf16-mixed Fabric (`rucai.runtime.fabric` on conf/hardware/gpu.yaml), then one stage-2 run under
DeepSpeed ZeRO-2 (conf/hardware/deepspeed_stage_2.yaml, devices=1) that saves a step checkpoint
through `fabric.save`, is stopped, and resumes from it.
Usage: python experiments/r1searcher/gpu_check.py <data_dir> <policy_dir> <out_dir>"""

import json
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from rucai import runtime
from rucai.r1searcher import rl
from rucai.r1searcher.config import RLStageConfig
from rucai.r1searcher.evaluate import evaluate
from rucai.r1searcher.rollout import search_hf_llm
from rucai.retrieval import load_retriever
from rucai.retrieval.index import ensure_index
from rucai.schema import HardwareConfig

ROOT = Path(__file__).resolve().parents[2]
data, policy, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])


def profile(name, **over):
    return OmegaConf.merge(OmegaConf.structured(HardwareConfig), OmegaConf.load(ROOT / "conf" / "hardware" / f"{name}.yaml"),
                           over)


print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
hw = profile("gpu")
t = time.perf_counter()
idx = ensure_index(out / "index", "hotpotqa_contexts", data / "multihop_qa" / "hotpotqa_dev500_with_contexts.jsonl")
ret = load_retriever(idx)
print("index", len(ret.passages), round(time.perf_counter() - t, 1), "s")


def rows(name):
    return [json.loads(x) for x in (data / "multihop_qa" / f"{name}.jsonl").read_text().splitlines()]


res = {}
for stage, reward, init in (("stage1", "paper_stage1", policy), ("stage2", "paper_stage2", None)):
    s = RLStageConfig(algo="grpo" if stage == "stage1" else "reinforce_pp_baseline", reward=reward, steps=2,
                      prompts_per_step=4, n_samples=8, lr=1e-4, kl_coef=1e-3, micro_batch_size=16,
                      max_tokens_per_round=48, max_response_tokens=128, max_searches=2, gradient_checkpointing=False)
    t = time.perf_counter()
    r = rl.train_stage(init or res["stage1"]["policy"], out / stage, rows(f"r1searcher_{stage}_train"), ret, s,
                       hardware=hw, prompt_style="chat", seed=42, name=stage)
    res[stage] = r
    print(stage, "init_from", r["init_from"], "->", r["policy"], round(time.perf_counter() - t, 1), "s")
    print(stage, "last", json.dumps(r["last"]))
# DeepSpeed ZeRO-2 (the qwen25_7b_base profile's strategy) on one GPU: 3 steps with a checkpoint every
# step, stopped after step 2's row, then resumed from step 2's checkpoint
hw_ds = profile("deepspeed_stage_2", devices=1)
s = RLStageConfig(reward="paper_stage2", steps=3, prompts_per_step=4, n_samples=8, lr=1e-4, micro_batch_size=16,
                  max_tokens_per_round=48, max_response_tokens=128, max_searches=2, checkpoint_every=1,
                  gradient_checkpointing=False)
real = rl.append_csv_row


def stop_after_2(path, row):
    real(path, row)
    if row["step"] == 2:
        raise KeyboardInterrupt("stopped after step 2")


try:
    t = time.perf_counter()
    rl.append_csv_row = stop_after_2
    try:
        rl.train_stage(res["stage2"]["policy"], out / "zero2", rows("r1searcher_stage2_train"), ret, s,
                       hardware=hw_ds, prompt_style="chat", seed=42, name="zero2")
    except KeyboardInterrupt:
        pass
    rl.append_csv_row = real
    ckpt = out / "zero2" / "checkpoints" / "last.ckpt"
    print("zero2 checkpoint", ckpt, ckpt.is_dir(), sorted(p.name for p in ckpt.iterdir()) if ckpt.is_dir() else "")
    r = rl.train_stage(res["stage2"]["policy"], out / "zero2", rows("r1searcher_stage2_train"), ret, s,
                       hardware=hw_ds, prompt_style="chat", seed=42, name="zero2", resume=str(ckpt))
    steps = [ln.split(",")[1] for ln in (out / "zero2" / "rewards.csv").read_text().splitlines()[1:]]
    print("zero2 ok: resumed after step", r["resumed_after_step"], "steps", steps, round(time.perf_counter() - t, 1), "s")
except Exception as e:  # noqa: BLE001 - report and go on to the evaluation
    rl.append_csv_row = real
    print("zero2 FAILED", type(e).__name__, str(e)[:500])
path = res["stage2"]["policy"]
llm = search_hf_llm(model=runtime.load_causal_lm(path, hw), tokenizer=runtime.load_tokenizer(path), batch_size=32,
                    device="cuda")
t = time.perf_counter()
m = evaluate(llm, llm.tokenizer, ret, data, out / "eval", ["hotpotqa_500", "bamboogle"], ["r1searcher", "rag", "naive"],
             8, max_tokens=32)
print("eval", round(time.perf_counter() - t, 1), "s", json.dumps({k: round(v, 3) for k, v in m.items()
                                                                   if k.endswith(("cover_em", "searches_per_question"))}))
print("GPU CHECK OK")
