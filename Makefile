# The README's two commands: `make bench` and `make test`. Each installs first when needed (a stamp file).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
PIP     := $(BIN)/pip install --disable-pip-version-check -c constraints.txt
STAMP   := $(VENV)/.stamp-install
MODEL   ?= twin
ARGS    ?=

.PHONY: help install install-gpu test bench export quick serve loadtest report clean distclean

help:
	@echo "make bench     set up, export the StructBERT twin, measure every backend, load-test, write the report"
	@echo "make test      set up and run the test suite"
	@echo "make install | install-gpu | export | quick | serve | loadtest | report | clean"

install: $(STAMP)

# torch first and pinned: an unpinned torch resolves to a multi-GB CUDA build.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e '.[cpu,dev]'
	touch $@

# GPU hosts: CUDA torch and onnxruntime-gpu instead of the CPU builds (needs a CUDA 12 driver).
install-gpu:
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126
	$(BIN)/pip install -e '.[gpu,dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider $(ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench run --model $(MODEL) $(ARGS)

export: $(STAMP)
	$(BIN)/python -m bench export --model $(MODEL) $(ARGS)

quick: $(STAMP)
	$(BIN)/python -m bench run --quick --model $(MODEL) $(ARGS)

clean:
	rm -rf results .pytest_cache .hypothesis
	find . -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf artifacts $(VENV) *.egg-info
