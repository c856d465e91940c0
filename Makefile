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
SYSTEM_PROGRAMS := bedtools=bedtools npm=npm
BROWSER_PROGRAMS := chromium=chromium chromedriver=chromium-driver
TEST_PROGRAMS := nginx=nginx-light
IGV_VERSION := 3.8.10
IGV_JS := static/vendor/igv.min.js

BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test clean system-deps

install: $(STAMP) $(IGV_JS)

# igv.js, pinned, from the npm registry into static/vendor (the page never loads it from a CDN)
$(IGV_JS): Makefile
	@scripts/system-deps.sh npm=npm
	rm -rf static/.npm
	npm install --silent --no-audit --no-fund --prefix static/.npm igv@$(IGV_VERSION)
	mkdir -p static/vendor
	cp static/.npm/node_modules/igv/dist/igv.min.js $@.tmp && mv $@.tmp $@
	rm -rf static/.npm

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
	$(BIN)/epiformer serve demo_out/precompute -m demo_out/runs/demo.best_corr.pth.tar \
		--annotation demo_out/data/annotation.bed --port $(PORT)

test: install
	@scripts/system-deps.sh $(BROWSER_PROGRAMS) || echo "set-up: Chromium could not be installed here; the browser tests will be skipped"
	@scripts/system-deps.sh $(TEST_PROGRAMS) || echo "set-up: nginx could not be installed here; the tests of deploy/nginx.conf will be skipped"
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) demo_out test-artifacts *.egg-info build dist static/vendor
