# The README's two commands: `make bench` and `make test`. Each installs first when needed (a stamp file).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
PIP     := $(BIN)/pip install --disable-pip-version-check -c constraints.txt
STAMP   := $(VENV)/.stamp-install
MODEL   ?= twin
ARGS    ?=

.PHONY: help install install-gpu test-deps test bench export quick serve loadtest report check-int8 check-trust \
        check-service check-overload fuzz clean distclean

help:
	@echo "make bench     set up, export the StructBERT twin, measure every backend, load-test, write the report"
	@echo "make test      set up and run the test suite"
	@echo "make install | install-gpu | export | quick | serve | loadtest | report | clean"
	@echo "make check-int8 | check-trust | check-service | check-overload | fuzz   (benchmark commands)"

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

# The report test drives Debian's headless Chromium; Chinese text needs the Noto CJK fonts.
test-deps:
	@command -v chromium >/dev/null 2>&1 && fc-list 2>/dev/null | grep -qi "noto.*cjk" || { \
	  echo "installing chromium + fonts-noto-cjk for the report test"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-cjk) \
	  || echo "could not install chromium: the browser test will be skipped with that reason"; }

test: $(STAMP) test-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider $(ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench all --model $(MODEL) $(ARGS)

export: $(STAMP)
	$(BIN)/python -m bench export --model $(MODEL) $(ARGS)

quick: $(STAMP)
	$(BIN)/python -m bench all --quick --model $(MODEL) $(ARGS)

serve: $(STAMP)
	$(BIN)/python -m bench serve --model $(MODEL) $(ARGS)

loadtest: $(STAMP)
	$(BIN)/python -m bench sweep --model $(MODEL) --variants batch,nobatch --users 1,2,4,8,16 $(ARGS)

report: $(STAMP)
	$(BIN)/python -m bench report latest $(ARGS)

check-int8 check-trust check-service check-overload: $(STAMP)
	$(BIN)/python -m bench check $(subst check-,,$@) --model $(MODEL) $(ARGS)

fuzz: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_fuzz.py -s --fuzz-examples 1000 $(ARGS)

clean:
	rm -rf results .pytest_cache .hypothesis
	find . -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf artifacts $(VENV) *.egg-info
