# The two set-up commands of the README:
#   make lab    -> environment + JupyterLab on notebooks/ (127.0.0.1, prints the URL)
#   make test   -> environment + Chromium + the whole test suite
# Everything installs from nothing: a venv in .venv, pip packages, Node packages
# (through jlpm, during the package build) and Debian's chromium for browser tests.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kernelkit-installed
PORT ?= 8888
export TF_CPP_MIN_LOG_LEVEL := 3
export TF_ENABLE_ONEDNN_OPTS := 0

.PHONY: lab test env chromium clean benchmarks

env: $(STAMP)

$(STAMP): pyproject.toml labextension/package.json labextension/yarn.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The build (isolated, from pyproject.toml) brings jupyter-builder's jlpm, installs the
	# labextension's Node packages from yarn.lock and builds it into kernelkit/labextension.
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

lab: env
	$(BIN)/jupyter labextension list 2>&1 | grep -i kernelkit
	$(BIN)/jupyter lab --no-browser --ip=127.0.0.1 --port=$(PORT) --ServerApp.root_dir=notebooks \
	    $(if $(filter 0,$(shell id -u)),--allow-root)

chromium:
	command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

test: env chromium
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest tests notebooks \
	    --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg \
	    --nbval-kernel-name python3 -p no:cacheprovider -rfE --durations=15

benchmarks: env
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python benchmarks/bench_progress.py
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python benchmarks/bench_extract.py

clean:
	rm -rf $(VENV) labextension/node_modules labextension/lib kernelkit/labextension build dist
