#!/usr/bin/env bash
# One GPU machine pass over everything in rucai that needs CUDA (run by the developers' device
# tool; any CUDA box with torch/lightning/transformers works). Writes a log and JSON lines to $OUT.
#   OUT=/tmp/gpu-check bash scripts/gpu-check.sh
# Missing Python packages (hydra, deepspeed, ...) travel as wheels in .whl/ (installed to /tmp/site).
set -u
OUT=${OUT:-/tmp/gpu-check}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 WANDB_MODE=disabled RUCAI_ROOT=$PWD
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONPATH=${PYTHONPATH:-$PWD}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, lightning, transformers; print('torch', torch.__version__, 'lightning', lightning.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"

# 1. hardware profiles: one tiny Lightning fit each (quickstart, smoke settings, one GPU)
mkdir -p outputs/hw_check
for hw in ${HW:-gpu ddp deepspeed_stage_2 deepspeed_stage_3 fsdp deepspeed_stage_3_offload}; do
  t0=$(date +%s)
  timeout 150 python3 run.py experiment=quickstart debug=smoke hardware=$hw hardware.devices=1 logger=csv \
      trainer.max_epochs=2 hydra.run.dir=outputs/hw_check/$hw > "outputs/hw_check/$hw.log" 2>&1
  rc=$?
  python3 - "$hw" "$rc" "$(( $(date +%s) - t0 ))" <<'PY' | tee -a "$OUT/results.jsonl"
import json, sys, pathlib
hw, rc, sec = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
m = pathlib.Path(f"outputs/hw_check/{hw}/metrics.json")
d = json.loads(m.read_text()) if m.exists() else {}
keep = {k: d.get(k) for k in ("status", "test/recall@10", "test/ndcg@10", "epochs_trained", "sec_per_epoch")}
print(json.dumps({"check": "hardware", "profile": hw, "rc": rc, "wall_s": sec, **keep}))
PY
  [ "$rc" = 0 ] || grep -E "Error|error:" "outputs/hw_check/$hw.log" | tail -4
done

[ -n "${ONLY_HW:-}" ] && { echo done; exit 0; }

# 2. TIGER constrained beam search throughput on the GPU (same model as the CPU figure)
timeout 90 python3 -m rucai.models.tiger --bench --device cuda --beams 20 50 --num-users 4096 --batch-size 1024 \
    2>&1 | tee "$OUT/tiger_bench.txt" | tail -4

# 3. EASY-EP on the GPU (scoring in bf16, streamed pruning, full vs pruned throughput)
if [ -f experiments/easyep/gpu_check.py ]; then
  timeout 200 python3 experiments/easyep/gpu_check.py 2>&1 | tee "$OUT/easyep.txt" | tail -15
fi
# 4. CoCoRec at the paper's Instruments settings on random data (bf16, 24,000 negatives)
timeout 150 python3 experiments/cocorec/gpu_check.py 2>&1 | tee "$OUT/cocorec.txt" | tail -2

# 5. UTGRec's Qwen2-VL + LoRA tokenizer path, tiny random weights, through DeepSpeed ZeRO-2
timeout 200 python3 experiments/utgrec/gpu_check.py --strategy deepspeed_stage_2 2>&1 | tee "$OUT/utgrec.txt" | tail -2
timeout 200 python3 experiments/utgrec/gpu_check.py --strategy deepspeed_stage_2 --image-branch 2>&1 \
    | tee "$OUT/utgrec_images.txt" | tail -2
echo done
