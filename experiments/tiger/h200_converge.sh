#!/usr/bin/env bash
# Paper-size TIGER (experiment=tiger/office: T5 4+4 layers, d_model 128, batch 256, beam 20,
# constrained) on all 4,905 Office users on one lent H200, bf16 (hardware=gpu): issue 14's goal,
# converged in at most 10 minutes. Run through the device tool from the repository root, with
# `.whl` (hydra-core 1.3.8, omegaconf 2.3.1, antlr4 4.9.3 wheels), `.devdata/amazon18_office` and
# `.cache/{embeddings,semantic_ids}` (the item embeddings and RQ-VAE codes, built on CPU) carried.
# Validation on 1,000 seeded users per epoch, the best checkpoint re-validated on all of them.
set -uo pipefail
OUT=${OUT:-/tmp/out}
LIMIT=${LIMIT:-480}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 RUCAI_DATA_DIR=$PWD/.devdata RUCAI_CACHE_DIR=$PWD/.cache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
start=$(date +%s)
timeout -s TERM "$LIMIT" python3 run.py experiment=tiger/office hardware=gpu data.val_users=1000 \
    trainer.enable_progress_bar=false hydra.run.dir=/tmp/run > "$OUT/run.log" 2>&1
rc=$?
echo "rc=$rc wall_s=$(( $(date +%s) - start ))" | tee -a "$OUT/run.log"
for f in metrics.json config_resolved.yaml eval/val.csv eval/test.csv eval/val_full.csv; do
  [ -f "/tmp/run/$f" ] && cp "/tmp/run/$f" "$OUT/$(basename "$f")"
done
tail -5 "$OUT/run.log"
