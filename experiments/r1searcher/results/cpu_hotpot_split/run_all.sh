#!/usr/bin/env bash
# The CPU run on the HotpotQA split (issue 13 item 5), as run on 2026-12-03 (2-core VM, no GPU, shared
# with 4 other jobs). Per seed: stage-1 training with the overlay's lr and the lr-0 control of the same
# length (one thread each), then greedy evaluation of each policy on held-out questions (method.eval.limit). Resumable: a rerun skips finished stages and continues an interrupted one (ckpt_path=last).
#   nohup bash experiments/r1searcher/results/cpu_hotpot_split/run_all.sh > outputs/r1s_split/run_all.log 2>&1 &
#   python -m rucai.r1searcher.report outputs/r1s_split --out experiments/r1searcher/results/cpu_hotpot_split
# As run on 2026-12-03: this script did seed 1 (11:30-11:48); seed 3 (11:48-12:04) and then seed 2
# (11:58-12:15) ran the same train/evaluate commands from copies of it, started while the machine was
# idle (seed 3 alongside seed 1's evaluation). The SmolLM2 baselines (baselines_smollm2/):
#   python run.py experiment=r1searcher/smollm2_hotpot_split task=r1searcher.eval seed=1 \
#       'method.eval.modes=[rag,naive]' hydra.run.dir=outputs/r1s_split_baselines/smollm2
set -u
cd "$(dirname "$0")/../../../.."
export RUCAI_DATA_DIR=${RUCAI_DATA_DIR:-../shared/data} OMP_NUM_THREADS=1
OUT=${OUT:-outputs/r1s_split}
EXP=experiment=r1searcher/smollm2_hotpot_split
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
record() {  # the code each run ran with
  mkdir -p "$1"; { date -u; git rev-parse HEAD; git diff --stat; } > "$1/git_state_$(date -u +%H%M%S).txt"
  git diff -- rucai/r1searcher > "$1/git_diff_r1searcher_$(date -u +%H%M%S).patch"
}
train() {  # arm seed
  local lr=(); [ "$1" = lr0 ] && lr=(method.stage1.lr=0)
  record "$OUT/$1_s$2/train"
  $PY run.py $EXP seed="$2" "${lr[@]}" ckpt_path=last hydra.run.dir="$OUT/$1_s$2/train" > "$OUT/$1_s$2/train.log" 2>&1 \
    || echo "FAILED $1_s$2 train"
}
evaluate() {  # arm seed
  record "$OUT/$1_s$2/eval"
  $PY run.py $EXP task=r1searcher.eval seed="$2" method.init_from="$OUT/$1_s$2/train" \
    hydra.run.dir="$OUT/$1_s$2/eval" > "$OUT/$1_s$2/eval.log" 2>&1 || echo "FAILED $1_s$2 eval"
}
# two processes of one thread each (trained and lr-0 of one seed side by side), seed after seed. The lr-0
# policy is SmolLM2 itself and greedy evaluation is deterministic: the seed-1 control evaluation stands
# for all three (rucai.r1searcher.report checks the weights are bit-identical)
for seed in 1 2 3; do
  train trained $seed & train lr0 $seed & wait
  echo "$(date -u +%T) trained seed $seed"
  if [ $seed = 1 ]; then evaluate trained $seed & evaluate lr0 $seed & wait; else evaluate trained $seed; fi
  echo "$(date -u +%T) evaluated seed $seed"
done
echo "$(date -u +%T) ALL DONE"
