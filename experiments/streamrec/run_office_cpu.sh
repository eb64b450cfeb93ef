#!/usr/bin/env bash
# STREAM-Rec on all 4,905 Office users, 3 seeds (issue 17). One run per seed trains the three phases
# (pretrain/, sft/, rl/ under the run folder; rows "stage 1", "stages 1+2", "stages 1+2+3"); the
# direct-TIGER row is experiment=tiger/office_cpu's seeds (issue 14's comparison: same T5 and protocol,
# and the same item tokenizer, MTGRec's last-epoch RQ-VAE `tok_04.json`, passed below as TOK). Every
# phase resumes (ckpt_path=last) and a finished phase is reused, so rerunning this script after an
# interruption continues where it stopped. RUCAI_PARALLEL=N runs N seeds at a time; SEEDS="1 2" runs
# only those seeds (default 0 1 2). Arguments after OUT are passed to every run as overrides (a CPU
# budget, e.g. method.pretrain.epochs=25; they go into each run's config_resolved.yaml).
#   RUCAI_DATA_DIR=../shared/data bash experiments/streamrec/run_office_cpu.sh [OUT [OVERRIDES...]]
set -euo pipefail
OUT=${1:-outputs/streamrec/office_cpu}
shift $(( $# > 0 ? 1 : 0 ))
PY=${PY:-.venv/bin/python}
TOK=${TOK:-experiments/tiger/results/office_cpu_comparison/tokenizers/tokenizers/tok_04.json}
PARALLEL=${RUCAI_PARALLEL:-1}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
done_run() { [ -f "$1/metrics.json" ] && grep -q '"status": "completed"' "$1/metrics.json"; }
for s in ${SEEDS:-0 1 2}; do
  dir=$OUT/seed$s
  if done_run "$dir"; then echo "done: $dir"; continue; fi
  mkdir -p "$dir"
  $PY run.py experiment=streamrec/office_cpu seed=$s hydra.run.dir=$dir ckpt_path=last \
      item_tokenizer=file item_tokenizer.path=$TOK trainer.enable_progress_bar=false "$@" > "$dir.log" 2>&1 &
  while [ "$(jobs -rp | wc -l)" -ge "$PARALLEL" ]; do sleep 10; done
done
wait
M=""
for p in pretrain sft rl; do for k in recall@5 ndcg@5 recall@10 ndcg@10; do M="$M,$p/test/$k"; done; done
$PY -m rucai.results $OUT --out $OUT --metrics ${M#,}
