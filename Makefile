# The two commands of the README. Both install into ./.venv first (idempotent).
PY ?= python3.11
VENV := .venv
export PIP_CACHE_DIR := $(CURDIR)/.cache/pip
export XDG_CACHE_HOME := $(CURDIR)/.cache
export GX_ANALYTICS_ENABLED := false

.PHONY: demo test test-scale-out install

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PY) -m venv $(VENV)
	# torch first, on its own: the CPU build (a bare requirement would pull a CUDA build of several GB)
	$(VENV)/bin/pip install -q torch==2.13.0
	$(VENV)/bin/pip install -q -r requirements.lock -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/eval-pipeline demo

test: install
	$(VENV)/bin/python -m pytest

# Opt-in: the pipeline's steps on a local Dask cluster, with an S3 endpoint (moto) on 127.0.0.1
test-scale-out: install
	$(VENV)/bin/pip install -q dagster-dask==0.29.27 'moto[server]==5.2.5'
	EVAL_PIPELINE_SCALE_OUT_TESTS=1 $(VENV)/bin/python -m pytest eval_pipeline_tests/test_scale_out.py
