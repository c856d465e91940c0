# Set-up and everyday commands. Everything is installed into .venv in this folder.
#   make demo   install, run the offline demo, then serve its hub, tracks and API (Ctrl-C stops it)
#   make test   install, then run the whole test suite
# GPU users: make TORCH_INDEX_URL=<the PyTorch wheel index for your CUDA version> demo
# (see README.md, "GPUs").

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
TORCH_INDEX_URL ?=
PYTEST_ARGS ?=
PORT ?= 8000
SYSTEM_PROGRAMS := bedtools=bedtools

BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test clean system-deps

install: $(STAMP)

system-deps:
	@scripts/system-deps.sh $(SYSTEM_PROGRAMS)

$(STAMP): setup.py constraints.txt Makefile scripts/system-deps.sh
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "set-up: Python >= 3.10 is required, found " + sys.version.split()[0] + "; run make PYTHON=python3.11 ...")'
	@scripts/system-deps.sh $(SYSTEM_PROGRAMS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		$(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL)) -c constraints.txt "$(TORCH)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	@touch $(STAMP)

demo: install
	$(BIN)/epiformer demo -o demo_out
	$(BIN)/epiformer serve demo_out/precompute -m demo_out/runs/demo.best_corr.pth.tar --port $(PORT)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) demo_out test-artifacts *.egg-info
