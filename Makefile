# The two set-up commands of the README:
#   make lab    -> environment + JupyterLab on notebooks/ (127.0.0.1, prints the URL)
#   make test   -> both environments + Chromium + the whole test suite, in two legs:
#                  1. TensorFlow (.venv): everything, browser and labextension tests included;
#                  2. JAX (.venv-jax, no TensorFlow), KERAS_BACKEND=jax on 8 host devices as on
#                     a TPU v5e-8: every test and tutorial meant for JAX.
# Everything installs from nothing: venvs in .venv and .venv-jax, pip packages, Node packages
# (through jlpm, during the package build) and Debian's chromium for browser tests.
# `make test-tf` and `make test-jax` run one leg each.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kernelkit-installed
VENV_JAX := .venv-jax
BIN_JAX := $(VENV_JAX)/bin
STAMP_JAX := $(VENV_JAX)/.kernelkit-installed
PORT ?= 8888
export TF_CPP_MIN_LOG_LEVEL := 3
export TF_ENABLE_ONEDNN_OPTS := 0

# Tutorials the JAX leg runs: all but the stateful-RNN one (Keras 3.15's JAX trainer drops RNN
# state updates, so kernelkit refuses stateful fits there; it runs in the TensorFlow leg).
JAX_NOTEBOOKS := $(filter-out notebooks/05_stateful_rnn.ipynb,$(sort $(wildcard notebooks/*.ipynb)))
NBVAL := --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-kernel-name python3 \
    -p no:cacheprovider

# Leg 1. KERAS_BACKEND is exported so that tutorials which setdefault("KERAS_BACKEND", "jax")
# still run on TensorFlow here.
LEG_TF = KERAS_BACKEND=tensorflow KERNELKIT_REQUIRE_BROWSER=1 PATH="$(abspath $(BIN)):$$PATH" \
    $(BIN)/python -m pytest tests notebooks $(NBVAL) -rfEs --durations=15
# Leg 2: like a Colab/Kaggle TPU runtime (jax and keras, no TensorFlow, no JupyterLab), with the
# 8 devices of a v5e-8 simulated on the host.
LEG_JAX = KERAS_BACKEND=jax XLA_FLAGS=--xla_force_host_platform_device_count=8 \
    PATH="$(abspath $(BIN_JAX)):$$PATH" $(BIN_JAX)/python -m pytest \
    tests $(JAX_NOTEBOOKS) -m "not tensorflow and not jupyterlab and not browser" $(NBVAL) -rfEs --durations=15

.PHONY: lab lint test test-tf test-jax env env-jax chromium clean benchmarks screenshots

env: $(STAMP)

$(STAMP): pyproject.toml labextension/package.json labextension/yarn.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The build (isolated, from pyproject.toml) brings jupyter-builder's jlpm, installs the
	# labextension's Node packages from yarn.lock and builds it into kernelkit/labextension.
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

env-jax: $(STAMP_JAX)

# Installed as a TPU runtime is: jax and keras first (their versions saved then), then kernelkit's
# core dependencies and the test tools (the test-jax extra: no TensorFlow). It comes after the main environment, whose build
# made kernelkit/labextension, so this editable build skips the JS build (skip-if-exists).
$(STAMP_JAX): $(STAMP) pyproject.toml
	test -x $(BIN_JAX)/python || $(PYTHON) -m venv $(VENV_JAX)
	$(BIN_JAX)/python -m pip install -q --upgrade pip
	$(BIN_JAX)/python -m pip install -q "jax[cpu]" keras
	# What the runtime pinned: tests/test_packaging.py checks kernelkit moved none of it.
	$(BIN_JAX)/python -m pip freeze > $(VENV_JAX)/runtime-pins.txt
	$(BIN_JAX)/python -m pip install -q -e ".[test-jax]"
	touch $(STAMP_JAX)

lab: env
	$(BIN)/jupyter labextension list 2>&1 | grep -i kernelkit
	$(BIN)/jupyter lab --no-browser --ip=127.0.0.1 --port=$(PORT) --ServerApp.root_dir=notebooks \
	    $(if $(filter 0,$(shell id -u)),--allow-root)

chromium:
	command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# The linters, a gate of make test (seconds): ruff (pinned in the test extras, Google docstring
# convention), the architecture contracts (import-linter) and mypy --strict on the pure modules.
lint: env
	$(BIN)/ruff check kernelkit tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/python -m mypy

# Fail fast: leg 2 runs only when leg 1 passed; the last line says which leg failed.
test: env env-jax chromium
	@echo "== make test: lint =="
	$(MAKE) --no-print-directory lint || { echo "make test: lint FAILED" >&2; exit 1; }
	@echo "== make test: leg 1 of 2, TensorFlow ($(VENV)) =="
	$(LEG_TF) || { echo "make test: leg 1 of 2 (TensorFlow, $(VENV)) FAILED" >&2; exit 1; }
	@echo "== make test: leg 2 of 2, JAX on 8 host devices ($(VENV_JAX), no TensorFlow) =="
	$(LEG_JAX) || { echo "make test: leg 2 of 2 (JAX, $(VENV_JAX)) FAILED" >&2; exit 1; }

test-tf: env chromium
	$(LEG_TF)

test-jax: env-jax
	$(LEG_JAX)

# The peers the benchmarks compare against (tqdm, livelossplot, with matplotlib and bokeh) live in
# build/venv-bench, layered over .venv by one .pth line: kernelkit's runtime and tests never see them.
VENV_BENCH := build/venv-bench
BIN_BENCH := $(VENV_BENCH)/bin
STAMP_BENCH := $(VENV_BENCH)/.peers-installed
PURELIB := import sysconfig; print(sysconfig.get_path("purelib"))

$(STAMP_BENCH): $(STAMP)
	test -x $(BIN_BENCH)/python || $(PYTHON) -m venv $(VENV_BENCH)
	echo "import site; site.addsitedir('$$($(BIN)/python -c '$(PURELIB)')')" \
	    > "$$($(BIN_BENCH)/python -c '$(PURELIB)')/zz_kernelkit_venv.pth"
	$(BIN_BENCH)/python -m pip install -q tqdm livelossplot
	touch $(STAMP_BENCH)

# The peers table on both backends (fresh kernels, about 20 minutes on 2 cores), then the
# progress memory/size figures and extraction against predict.
benchmarks: env env-jax $(STAMP_BENCH)
	PATH="$(abspath $(BIN_BENCH)):$$PATH" $(BIN_BENCH)/python benchmarks/bench_peers.py --backend tensorflow
	KERAS_BACKEND=jax PATH="$(abspath $(BIN_JAX)):$$PATH" $(BIN_JAX)/python benchmarks/bench_peers.py --backend jax
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python benchmarks/bench_progress.py
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python benchmarks/bench_extract.py

# The README's pictures (docs/images/), taken in a real JupyterLab in Chromium.
screenshots: env chromium
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python docs/screenshots.py

clean:
	rm -rf $(VENV) $(VENV_JAX) labextension/node_modules labextension/lib kernelkit/labextension build dist
