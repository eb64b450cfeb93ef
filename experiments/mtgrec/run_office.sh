#!/usr/bin/env bash
# The README's Office table: 5 variants x 3 seeds, one process at a time, 1 thread (shared CPU).
# Tokenizers are built once (python run.py experiment=mtgrec/office task=mtgrec.tokenizers ...) and
# shared by every run through method.tokenizers.dir.
#   RUCAI_DATA_DIR=../shared/data bash experiments/mtgrec/run_office.sh [outputs/mtgrec]
set -u
OUT=${1:-outputs/mtgrec}
TOK=$OUT/office_tokenizers
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
PY=${PY:-.venv/bin/python}
[ -f "$TOK/epochs/tokenizers.json" ] || $PY run.py experiment=mtgrec/office task=mtgrec.tokenizers \
    method.tokenizers.dir=$TOK/epochs hydra.run.dir=$TOK/epochs_run
for SEED in 1 2 3; do
  for V in office office_no_curriculum office_single_tokenizer office_no_pretrain office_random_tokenizers; do
    DIR=$OUT/runs/$V/seed$SEED
    [ -f "$DIR/metrics.json" ] && grep -q '"task": "mtgrec.pipeline"' "$DIR/metrics.json" && continue
    if [ "$V" = office_random_tokenizers ]; then
      # WAIT_PID: a tokenizer job already building $TOK/random in the background
      while [ -n "${WAIT_PID:-}" ] && kill -0 "$WAIT_PID" 2>/dev/null; do sleep 10; done
      [ -f "$TOK/random/tokenizers.json" ] || $PY run.py experiment=mtgrec/$V task=mtgrec.tokenizers \
          method.tokenizers.dir=$TOK/random hydra.run.dir=$TOK/random_run
      TD=$TOK/random
    else
      TD=$TOK/epochs
    fi
    mkdir -p "$(dirname "$DIR")"
    echo "$(date -u +%H:%M:%S) start $V seed $SEED"
    $PY run.py experiment=mtgrec/$V seed=$SEED method.tokenizers.dir=$TD hydra.run.dir=$DIR > "$DIR.log" 2>&1 \
      || echo "$(date -u +%H:%M:%S) FAILED $V seed $SEED (see $DIR.log)"
    echo "$(date -u +%H:%M:%S) done $V seed $SEED"
  done
done
