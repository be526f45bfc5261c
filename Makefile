# The two commands of the README. Both install into ./.venv first (idempotent).
PY ?= python3.11
VENV := .venv
export PIP_CACHE_DIR := $(CURDIR)/.cache/pip
export XDG_CACHE_HOME := $(CURDIR)/.cache
export GX_ANALYTICS_ENABLED := false

.PHONY: demo test install

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
