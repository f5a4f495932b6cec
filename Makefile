# Every install step of the project lives here. Two entry points (see README):
#   make demo   set everything up, then run the main job (uact demo)
#   make test   set everything up, then run the test suite
# CPU machines: torch is installed first from the local CPU build and pinned by a constraints file.
# GPU machines: make CONSTRAINTS=constraints/gpu.txt TORCH_SPEC=torch test

PYTHON ?= python3.11
VENV ?= .venv
CONSTRAINTS ?= constraints/cpu.txt
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= train,sims,data,rlds,eval,scale,play,dev
PYTEST_ARGS ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml $(CONSTRAINTS) | sha1sum | cut -c1-12)-$(EXTRAS)

export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.cache/torch_extensions
export MUJOCO_GL ?= egl
export DS_BUILD_OPS ?= 0

.PHONY: setup demo test test-quick lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; set PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) -e ".[$(EXTRAS)]"
	@# robosuite's arms (the sims extra): without its dependency pins, see pyproject.toml
	case ",$(EXTRAS)," in *,sims,*) $(BIN)/python -m pip install -q --no-deps "robosuite==1.5.2";; esac
	rm -f $(VENV)/.installed-*
	touch $@

demo: setup
	$(BIN)/uact demo

# TensorFlow and a MuJoCo EGL context (Mesa's LLVM) crash a process that holds both, so the tests that load
# TensorFlow run in a second pytest process; the library itself keeps simulators in worker processes.
test: setup
	$(BIN)/ruff check .
	@# the report test opens uact eval's HTML in a real headless browser: Chromium from Debian's packages
	command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
	$(BIN)/python -m pytest -m "not tensorflow" $(PYTEST_ARGS)
	$(BIN)/python -m pytest -m tensorflow $(PYTEST_ARGS)

test-quick: setup
	$(BIN)/python -m pytest -m "not slow and not tensorflow" $(PYTEST_ARGS)
	$(BIN)/python -m pytest -m "tensorflow and not slow" $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python benchmarks/tokenizers.py && $(BIN)/python benchmarks/data.py
	PATH=$(CURDIR)/$(BIN):$$PATH pretrain/prepare_data.sh && $(BIN)/python benchmarks/train.py
	$(BIN)/python benchmarks/world_model.py && $(BIN)/python benchmarks/fewshot.py

clean:
	rm -rf $(VENV) .cache runs .pytest_cache .hypothesis
