# The two commands a newcomer needs: `make run` and `make test`. Everything else here serves them.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# CPU by default. GPU hosts (docs/clusters.md): make venv TF_PACKAGE='tensorflow[and-cuda]==2.18.1' EXTRAS=gpu,horovod,onnx,sim,test HOROVOD_GPU=NCCL
TF_PACKAGE ?= tensorflow-cpu==2.18.1
EXTRAS ?= cpu,horovod,onnx,sim,test
HOROVOD_GPU ?=
# Rebuild the environment only when the pinned requirements (or the choices above) change: horovod compiles.
STAMP := $(VENV)/.installed-$(shell (cat setup.cfg; echo '$(TF_PACKAGE) $(EXTRAS) $(HOROVOD_GPU)') | sha1sum | cut -c1-12)
# horovod compiles against the TensorFlow already in the venv: Gloo for CPU tensors, NCCL for GPU ones if asked.
HOROVOD_BUILD_ENV := MAKEFLAGS=-j$(shell nproc) HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 \
	HOROVOD_WITHOUT_MPI=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 HOROVOD_CPU_OPERATIONS=GLOO \
	$(if $(HOROVOD_GPU),HOROVOD_GPU_OPERATIONS=$(HOROVOD_GPU))
# The runtime environment the stack needs (docs/environments.md); the code sets the same for executors.
# The malloc thresholds keep the model's large step tensors out of mmap/munmap; two arenas keep the JVM that
# reads the parquet from growing with the data (ucluster_spark/_env.py).
RUN_ENV := PYSPARK_PYTHON=$(abspath $(PY)) PYSPARK_DRIVER_PYTHON=$(abspath $(PY)) \
	TF_USE_LEGACY_KERAS=1 SPARK_LOCAL_IP=127.0.0.1 PYTHONUNBUFFERED=1 \
	MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296 MALLOC_ARENA_MAX=2
CONFIG ?= conf/local.yaml
ARGS ?=
PYTEST_ARGS ?=

# The second environment (docs/environments.md): current TensorFlow, pyspark 4 and pyarrow, no horovod and
# no petastorm. Its tests are the ones marked `portable` (barrier launcher, arrow reader, standalone cluster).
MODERN_VENV := .venv-modern
MODERN_PY := $(MODERN_VENV)/bin/python
MODERN_EXTRAS ?= modern,modern-cpu,sim,test
MODERN_STAMP := $(MODERN_VENV)/.installed-$(shell (cat setup.cfg; echo '$(MODERN_EXTRAS)') | sha1sum | cut -c1-12)
MODERN_RUN_ENV := PYSPARK_PYTHON=$(abspath $(MODERN_PY)) PYSPARK_DRIVER_PYTHON=$(abspath $(MODERN_PY)) \
	TF_USE_LEGACY_KERAS=1 SPARK_LOCAL_IP=127.0.0.1 PYTHONUNBUFFERED=1 MALLOC_ARENA_MAX=2

.PHONY: run test test-fast venv lint clean-venv venv-modern test-modern

run: $(STAMP)
	$(RUN_ENV) $(VENV)/bin/spark-submit --master 'local[2]' \
		--driver-java-options "-Dlog4j2.configurationFile=$(abspath conf/log4j2.properties)" \
		jobs/train.py --config $(CONFIG) $(ARGS)

# Both environments: the whole suite in the default one, then the portable tests in the current-releases one.
test: $(STAMP) $(MODERN_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(RUN_ENV) $(PY) -m pytest $(PYTEST_ARGS)
	$(MODERN_RUN_ENV) $(MODERN_PY) -m pytest -m portable $(PYTEST_ARGS)

# After every change (a few minutes): lint, then every test that starts no Spark application and launches no rank
# (config, data rules, layers, losses, the golden test, docs, messages). `make test` is still what CI runs.
test-fast: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(RUN_ENV) $(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

venv: $(STAMP)

$(STAMP): setup.cfg
	@echo "== building the environment in $(VENV) (first time: ~7 minutes, horovod compiles)"
	rm -f $(VENV)/.installed-*
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip wheel "setuptools<70"
	@# 1. TensorFlow first: horovod's build inspects it.
	$(PIP) install --progress-bar off "$(TF_PACKAGE)" numpy==1.26.4 cloudpickle psutil pyyaml packaging
	@# 2. horovod (compiled, no build isolation) with every other pin, then this package in editable mode.
	$(HOROVOD_BUILD_ENV) $(PIP) install --progress-bar off --no-build-isolation -e ".[$(EXTRAS)]"
	@# 3. Keras 2 for TF 2.18 (horovod 0.28.1 cannot use Keras 3; TF_USE_LEGACY_KERAS=1 selects it), without its
	@# `tensorflow` requirement, which would pull the full 1.7 GB package beside tensorflow-cpu (docs/environments.md).
	$(PIP) install --progress-bar off --no-deps tf_keras==2.18.0
	$(RUN_ENV) $(PY) -c "import horovod.tensorflow as hvd; assert hvd.gloo_built(), 'horovod was built without Gloo'"
	touch $@

clean-venv:
	rm -rf $(VENV) $(MODERN_VENV)

venv-modern: $(MODERN_STAMP)

$(MODERN_STAMP): setup.cfg
	@echo "== building the current-releases environment in $(MODERN_VENV) (first time: ~4 minutes, no compiling)"
	rm -f $(MODERN_VENV)/.installed-*
	test -x $(MODERN_PY) || $(PYTHON) -m venv $(MODERN_VENV)
	$(MODERN_PY) -m pip install --quiet --upgrade pip wheel setuptools
	$(MODERN_PY) -m pip install --progress-bar off -e ".[$(MODERN_EXTRAS)]"
	$(MODERN_PY) -m pip install --progress-bar off --no-deps tf_keras==2.21.0
	$(MODERN_PY) -c "import importlib.util as u; assert not (u.find_spec('horovod') or u.find_spec('petastorm'))"
	touch $@

test-modern: $(MODERN_STAMP)
	$(MODERN_RUN_ENV) $(MODERN_PY) -m pytest -m portable $(PYTEST_ARGS)
