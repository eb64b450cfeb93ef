#!/usr/bin/env bash
# CoCoRec on all 4,905 Office users, 3 seeds, and its five ablations, 3 seeds each (issue 15); the
# SASRec row is experiments/sasrec/results/office_parity (same data, protocol and size). Every run
# resumes (ckpt_path=last) and a finished run (metrics.json status completed) is skipped, so rerunning
# this script after an interruption continues where it stopped. RUCAI_PARALLEL=N runs N at a time;
# SEEDS="1 2" runs only those seeds (default 0 1 2).
#   RUCAI_DATA_DIR=../shared/data bash experiments/cocorec/run_office_cpu.sh [OUT] [VARIANT...]
set -euo pipefail
OUT=${1:-outputs/cocorec/office_cpu}
shift || true
VARIANTS=${*:-office_cpu office_cpu_no_mcm office_cpu_no_msa office_cpu_no_text_fusion office_cpu_rq_codes office_cpu_no_candidate_code_term}
PY=${PY:-.venv/bin/python}
PARALLEL=${RUCAI_PARALLEL:-1}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
done_run() { [ -f "$1/metrics.json" ] && grep -q '"status": "completed"' "$1/metrics.json"; }
for v in $VARIANTS; do
  for s in ${SEEDS:-0 1 2}; do
    dir=$OUT/$v/seed$s
    if done_run "$dir"; then echo "done: $dir"; continue; fi
    mkdir -p "$dir"
    $PY run.py experiment=cocorec/$v seed=$s hydra.run.dir=$dir ckpt_path=last \
        trainer.enable_progress_bar=false > "$dir.log" 2>&1 &
    while [ "$(jobs -rp | wc -l)" -ge "$PARALLEL" ]; do sleep 10; done
  done
done
wait
$PY -m rucai.results $(for v in $VARIANTS; do echo $OUT/$v; done) --out $OUT \
    --metrics test/recall@5,test/ndcg@5,test/recall@10,test/ndcg@10
