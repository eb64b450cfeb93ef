#!/usr/bin/env bash
# The UTGRec tokenizer comparison on all 4,905 Office users (issue 16): one recommender
# (experiment=tiger/office_cpu's T5) on (ii) UTGRec codes without pre-training, (iii) UTGRec codes
# pre-trained on ml-100k then adapted, (iv) random codes in UTGRec's layout, 3 seeds each; row (i),
# TIGER's RQ-VAE codes, is experiments/tiger/results/office_cpu_comparison/tiger. Each tokenizer (and
# row iii's source-pre-trained recommender) is trained once (seed 0) and shared by the three seeds. Every run resumes (ckpt_path=last,
# finished stages reused; a completed run is skipped), so rerunning continues where it stopped.
# RUCAI_PARALLEL=N runs up to N of the nine recommender runs at a time (the tokenizers come first).
#   RUCAI_DATA_DIR=../shared/data bash experiments/utgrec/run_office_cpu.sh [OUT]
set -euo pipefail
OUT=${1:-outputs/utgrec/office_cpu}
PY=${PY:-.venv/bin/python}
PARALLEL=${RUCAI_PARALLEL:-1}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
common="trainer.enable_progress_bar=false ckpt_path=last"
done_run() { [ -f "$1/metrics.json" ] && grep -q '"status": "completed"' "$1/metrics.json"; }
for tok in office_cpu office_cpu_no_pretrain; do
  $PY run.py experiment=utgrec/$tok task=utgrec.codes seed=0 hydra.run.dir=$OUT/tokenizer_$tok $common \
      > $OUT/tokenizer_$tok.log 2>&1
done
# the recommender pre-trained on ml-100k's code sequences, once, shared by the seeds of row (iii)
$PY run.py experiment=utgrec/office_cpu task=utgrec.rec_pretrain seed=0 hydra.run.dir=$OUT/tokenizer_office_cpu \
    $common > $OUT/rec_pretrain.log 2>&1
rec() {  # rec RUN_DIR LOG OVERRIDES...: one recommender run in the background, at most $PARALLEL at once
  local dir=$1 log=$2; shift 2
  done_run "$dir" && return 0
  $PY run.py "$@" seed=${dir##*seed} hydra.run.dir=$dir $common > "$log" 2>&1 &
  while [ "$(jobs -rp | wc -l)" -ge "$PARALLEL" ]; do sleep 10; done
}
for s in 0 1 2; do
  for v in office_cpu office_cpu_no_pretrain; do
    T=$OUT/tokenizer_$v
    rec $OUT/$v/seed$s $OUT/${v}_seed$s.log experiment=utgrec/$v method.pretrain.dir=$T/pretrain \
        method.adapt.dir=$T/adapt method.codes_dir=$T/codes method.rec_pretrain.dir=$T/rec_pretrain
  done
  rec $OUT/office_cpu_random/seed$s $OUT/office_cpu_random_seed$s.log experiment=utgrec/office_cpu_random
done
wait
$PY -m rucai.results $OUT/office_cpu $OUT/office_cpu_no_pretrain $OUT/office_cpu_random --out $OUT \
    --metrics test/recall@5,test/ndcg@5,test/recall@10,test/ndcg@10
