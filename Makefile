# The README's two commands: `make bench` and `make test`. Each installs first when needed (a stamp file).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
PIP     := $(BIN)/pip install --disable-pip-version-check -c constraints.txt
STAMP   := $(VENV)/.stamp-install
GPU_STAMP := $(VENV)/.stamp-install-gpu
# Targets depend on whichever install this venv has: after `make install-gpu` its own stamp, so a later
# `make bench` or `make test` never reinstalls the CPU builds over the GPU ones.
ENV     := $(if $(wildcard $(GPU_STAMP)),$(GPU_STAMP),$(STAMP))
MODEL   ?= twin
ARGS    ?=
TORCH   := 2.13.0
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu
# GPU builds matched by the CUDA major version of the driver: `make install-gpu` (CUDA 13) or CUDA=12.
# onnxruntime-gpu 1.27+ is built for CUDA 13 (no 1.32 GPU wheel exists); 1.26.0 is the last CUDA 12 build.
CUDA    ?= 13
ORT_GPU_13 := 1.31.1
ORT_GPU_12 := 1.26.0
TORCH_INDEX_13 := https://download.pytorch.org/whl/cu130
TORCH_INDEX_12 := https://download.pytorch.org/whl/cu126

.PHONY: help install install-gpu test-deps test test-fast lint bench export quick serve loadtest report check-cpu check-int8 check-trust \
        check-service check-overload check-servers peers check-tune check-gpu check-serving check-sampler check-fronts check-faults check-soak fuzz clean distclean

help:
	@echo "make bench     set up, export the StructBERT twin, measure every backend, load-test, write the report"
	@echo "make test      set up and run the test suite (every tier; make test-fast: the fast tier, ~2 min)"
	@echo "make install | install-gpu | export | quick | serve | loadtest | report | lint | clean"
	@echo "make check-cpu | check-int8 | check-trust | check-service | check-overload | check-servers | check-tune | check-gpu | check-serving | check-sampler | check-fronts | check-faults | check-soak | fuzz   (benchmark commands)"

install: $(ENV)

# torch first and pinned, from PyTorch's CPU index: PyPI's Linux torch wheel is the multi-GB CUDA build. The index
# is probed first (5 s cap), since pip waits long on an unreachable one; unreachable, pip's default index (or this
# machine's local wheels) is used instead, with a note.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@if $(BIN)/python -c "import importlib.metadata as m, sys; sys.exit(m.version('torch') not in ('$(TORCH)', '$(TORCH)+cpu'))" 2>/dev/null; then \
	  echo "torch $(TORCH) is installed"; \
	elif timeout 5 $(PY) -c "import urllib.request; urllib.request.urlopen('$(TORCH_CPU_INDEX)/torch/', timeout=4)" 2>/dev/null; then \
	  $(PIP) torch==$(TORCH) --index-url $(TORCH_CPU_INDEX) --extra-index-url https://pypi.org/simple; \
	else \
	  echo "note: $(TORCH_CPU_INDEX) is unreachable: torch $(TORCH) from pip's default index (PyPI's is the CUDA build)"; \
	  $(PIP) torch==$(TORCH); \
	fi
	$(PIP) -e '.[cpu,dev]'
	touch $@

# GPU hosts: CUDA-matched torch and a pinned onnxruntime-gpu with its CUDA/cuDNN pip packages, after removing the
# CPU builds (CPU onnxruntime and onnxruntime-gpu share one package folder; torch==X does not replace X+cpu).
install-gpu: $(GPU_STAMP)

$(GPU_STAMP): pyproject.toml constraints.txt
	@case "$(CUDA)" in 12|13) ;; *) echo "install-gpu: CUDA=$(CUDA): choose 13 (default) or 12"; exit 2;; esac
	@v=$$($(PY) -m bench.measure.cuda_driver) || { echo "install-gpu: no NVIDIA driver (libcuda.so.1) on this host"; exit 1; }; \
	if [ "$${v%%.*}" -lt "$(CUDA)" ]; then \
	  echo "install-gpu: the driver supports CUDA $$v; the CUDA $(CUDA) builds need a CUDA $(CUDA).x driver."; \
	  echo "  update the NVIDIA driver, or run: make install-gpu CUDA=12  (onnxruntime-gpu $(ORT_GPU_12), torch cu126)"; \
	  exit 1; \
	fi; echo "driver supports CUDA $$v: installing the CUDA $(CUDA) builds"
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip uninstall -y -q torch onnxruntime onnxruntime-gpu || true
	$(PIP) torch==$(TORCH) --index-url $(TORCH_INDEX_$(CUDA)) --extra-index-url https://pypi.org/simple
	$(PIP) 'onnxruntime-gpu[cuda,cudnn]==$(ORT_GPU_$(CUDA))'
	$(PIP) -e '.[gpu,dev]'
	$(BIN)/python -c "import onnxruntime as o, torch; o.preload_dlls(); print('onnxruntime', o.__version__, \
	  o.get_available_providers(), '| torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.is_available())"
	rm -f $(STAMP)
	touch $@

# The report test drives Debian's headless Chromium; Chinese text needs the Noto CJK fonts.
test-deps:
	@command -v chromium >/dev/null 2>&1 && fc-list 2>/dev/null | grep -qi "noto.*cjk" || { \
	  echo "installing chromium + fonts-noto-cjk for the report test"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-cjk) \
	  || echo "could not install chromium: the browser test will be skipped with that reason"; }

# Peer servers for the load tests' targets (loadtests/targets.py, `check servers`): each in its own venv, pinned in
# loadtests/peers/NAME.txt (their FastAPI/uvicorn/protobuf pins would clash with ours in one environment).
PEERS_DIR := .venv-peers
PEER_NAMES := kserve litserve

peers: $(foreach p,$(PEER_NAMES),$(PEERS_DIR)/$(p)/.stamp)

$(PEERS_DIR)/%/.stamp: loadtests/peers/%.txt
	rm -rf $(PEERS_DIR)/$*
	$(PY) -m venv $(PEERS_DIR)/$*
	$(PEERS_DIR)/$*/bin/pip install --disable-pip-version-check -q -r $<
	touch $@

test: $(ENV) test-deps peers lint
	$(BIN)/python -m pytest -q -p no:cacheprovider $(ARGS)

# The fast tier for daily work: units, fakes and the tiny twin, no test marked e2e (real services, Locust, workers,
# Chromium) and none needing a GPU; `make test` (and CI) runs every tier.
test-fast: $(ENV) lint
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not e2e and not gpu" $(ARGS)

# ruff; the import contracts of pyproject.toml (layers, no cycles), read from this checkout's source; the core
# package type-checked strictly
lint: $(ENV)
	$(BIN)/ruff check bench exporters loadtests reports tests notebooks
	$(BIN)/lint-imports --no-logo --no-cache
	$(BIN)/mypy --strict bench/core

bench: $(ENV)
	$(BIN)/python -m bench all --model $(MODEL) $(ARGS)

export: $(ENV)
	$(BIN)/python -m bench export --model $(MODEL) $(ARGS)

quick: $(ENV)
	$(BIN)/python -m bench all --quick --model $(MODEL) $(ARGS)

serve: $(ENV)
	$(BIN)/python -m bench serve --model $(MODEL) $(ARGS)

loadtest: $(ENV)
	$(BIN)/python -m bench sweep --model $(MODEL) --variants batch,nobatch --users 1,2,4,8,16 $(ARGS)

report: $(ENV)
	$(BIN)/python -m bench report latest $(ARGS)

check-servers: peers

check-cpu check-int8 check-trust check-service check-overload check-servers check-tune check-gpu check-serving check-sampler check-fronts check-faults check-soak: $(ENV)
	$(BIN)/python -m bench check $(subst check-,,$@) --model $(MODEL) $(ARGS)

fuzz: $(ENV)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_fuzz.py -s --fuzz-examples 1000 $(ARGS)

clean:
	rm -rf results .locks .pytest_cache .hypothesis .mypy_cache .ruff_cache
	find . -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf artifacts $(VENV) $(PEERS_DIR) *.egg-info
