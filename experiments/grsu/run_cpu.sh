#!/usr/bin/env bash
# GRSU's CPU measurements on ReDial (issue 18), in order, every step resumable (evaluation turns are
# appended one by one and skipped on a rerun; the SFT stage resumes from its last checkpoint):
#   auc_base        the simulator (SmolLM2-135M-Instruct as packaged) scoring labels vs random items
#   crs_alone       the retrieval CRS alone (depth 0) on every evaluation turn
#   sft             simulator instruction tuning on the simulator-training half
#   auc_sft         the tuned simulator's AUC
#   search_random   search with a random reward (the ablation), first N turns
#   search_sim      search guided by the tuned simulator, the same turns
#   RUCAI_DATA_DIR=../shared/data bash experiments/grsu/run_cpu.sh [OUT] [N_TURNS] [SEED]
set -euo pipefail
OUT=${1:-outputs/grsu/redial_cpu}
N=${2:-50}
SEED=${3:-0}
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
run() { local dir=$OUT/$1; shift; mkdir -p "$dir"
  if [ -f "$dir/metrics.json" ] && grep -q '"status": "completed"' "$dir/metrics.json"; then echo "done: $dir"; return; fi
  $PY run.py experiment=grsu/redial_cpu seed=$SEED hydra.run.dir=$dir ckpt_path=last "$@" > "$dir.log" 2>&1; }
run auc_base task=grsu.simulator_auc
run crs_alone method.search.depth=0 method.search.reward=random method.max_turns=null
run sft task=grsu.sft
SIM=$OUT/sft/sft/simulator
run auc_sft task=grsu.simulator_auc method.simulator_dir=$SIM
run search_random method.search.reward=random method.max_turns=$N method.simulator_dir=$SIM
run search_sim method.max_turns=$N method.simulator_dir=$SIM
