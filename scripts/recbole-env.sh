#!/usr/bin/env bash
# Build RecBole 1.2.1 in its own environment (.venv-recbole/) for `python -m rucai.bench.recbole_sasrec`.
# Its dependency pins are old, so it stays out of the project's .venv. Idempotent.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENV="${RUCAI_RECBOLE_ENV:-$ROOT/.venv-recbole}"
if [ -x "$ENV/bin/python" ] && "$ENV/bin/python" -c "import recbole" 2>/dev/null; then
  echo "recbole env ready at $ENV"; exit 0
fi
python3 -m venv "$ENV"
"$ENV/bin/pip" install -q -U pip
"$ENV/bin/pip" install -q "${TORCH_SPEC:-torch==2.13.0}"
# recbole imports ray, which needs pkg_resources (removed from setuptools 81), and numpy<2 (np.bool8)
"$ENV/bin/pip" install -q "recbole==1.2.1" "setuptools<81" "numpy<2" "pandas<2.3" "scipy<1.14"
"$ENV/bin/python" -c "import recbole; print('recbole', recbole.__version__, 'ready at $ENV')"
