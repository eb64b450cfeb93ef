#!/usr/bin/env bash
# The converged comparison on all 4,905 Office users (issue 14 item 6): one shared set of MTGRec
# tokenizers (the authors' RQ-VAE recipe, K=5 last epochs), then TIGER (the last tokenizer, the
# train task, experiment=tiger/office_cpu) and MTGRec (experiment=mtgrec/office_cpu, same T5 size)
# over 3 seeds; SASRec's row comes from experiments/sasrec. Every run resumes (ckpt_path=last,
# finished stages reused), so rerunning this script after an interruption continues where it stopped.
# Two runs at a time (one per core, one thread each).
#   RUCAI_DATA_DIR=../shared/data bash experiments/tiger/run_office_cpu_comparison.sh [OUT]
set -euo pipefail
OUT=${1:-outputs/office_cpu_comparison}
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=1
common="trainer.enable_progress_bar=false ckpt_path=last"
$PY run.py experiment=mtgrec/office_cpu task=mtgrec.tokenizers hydra.run.dir=$OUT/tokenizers $common
TOK=$OUT/tokenizers/tokenizers
LAST=$(ls $TOK/tok_*.json | sort | tail -n 1)
for s in 0 1 2; do
  # no wall-clock cap: on a loaded machine the experiment's 1.5 h cap could end a run before early
  # stopping does (seed 0 early-stopped at epoch 44, inside the cap)
  [ -f $OUT/tiger/seed$s/metrics.json ] && grep -q '"status": "completed"' $OUT/tiger/seed$s/metrics.json || \
  $PY run.py experiment=tiger/office_cpu item_tokenizer=file item_tokenizer.path=$LAST seed=$s \
      hydra.run.dir=$OUT/tiger/seed$s $common trainer.max_time=null > $OUT/tiger_seed$s.log 2>&1 &
  [ -f $OUT/mtgrec/seed$s/metrics.json ] && grep -q '"status": "completed"' $OUT/mtgrec/seed$s/metrics.json || \
  $PY run.py experiment=mtgrec/office_cpu method.tokenizers.dir=$TOK seed=$s \
      hydra.run.dir=$OUT/mtgrec/seed$s $common > $OUT/mtgrec_seed$s.log 2>&1 &
  wait
done
# issue 14's metric check of the speed-ups: TIGER seed 0 on today's path (fp32, random batches, torch
# dropout), to compare with tiger/seed0 (bf16, length-grouped batches, fast dropout)
D=$OUT/tiger_slow_path/seed0
[ -f $D/metrics.json ] && grep -q '"status": "completed"' $D/metrics.json || \
$PY run.py experiment=tiger/office_cpu item_tokenizer=file item_tokenizer.path=$LAST seed=0 hydra.run.dir=$D $common \
    trainer.max_time=null hardware.precision=32-true data.length_grouping=false model.fast_dropout=false \
    > $OUT/tiger_slow_path_seed0.log 2>&1
# RecBole's SASRec seeds 1 and 2 (experiments/sasrec/README.md side-by-side), resumable per seed
for s in 1 2; do
  [ -d outputs/bench/recbole_seeds/recbole_h64_s$s ] || $PY -m rucai.bench.recbole_sasrec \
      --data-dir ${RUCAI_DATA_DIR:-../shared/data}/amazon18_office --hidden 64 --seeds $s --epochs 300 --sides recbole \
      --out outputs/bench/recbole_seeds/recbole_h64_s$s.json --log-dir outputs/bench/recbole_seeds \
      > $OUT/recbole_seed$s.log 2>&1 || true
done
$PY -m rucai.results $OUT/tiger $OUT/mtgrec --out $OUT --metrics test/recall@5,test/ndcg@5,test/recall@10,test/ndcg@10
