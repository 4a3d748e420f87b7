# capsynth — the two commands of the quick start, and a few more.
#   make demo   set up (venv + install) and run the whole pipeline: dvc repro
#   make test   set up and run the test suite
SHELL := /bin/bash
VENV ?= .venv
PYTHON_BOOT ?= $(shell command -v python3.11 || command -v python3)
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# the venv's tools (dvc, ray, mlflow, python) come first for every recipe
export PATH := $(abspath $(VENV))/bin:$(PATH)
export DVC_NO_ANALYTICS := 1
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: setup demo test test-fast smoke profile mlflow-ui clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)

demo: setup
	dvc repro
	@echo
	dvc metrics show
	@echo
	@echo "demo done: metrics/{captioner,vae,gan}.json above; open reports/index.html in a browser"
	@echo "(README.md §What the demo produces, §Evaluation)"

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow"

# the pipeline on the tiny smoke profile, as a DVC experiment: DVC writes the
# profile into params.yaml (git checkout params.yaml restores the default)
smoke: setup
	dvc exp run $$($(PY) -m pipelines.cli profile smoke)

# the MLflow UI on this machine only: http://127.0.0.1:5000
mlflow-ui: setup
	mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

clean:
	rm -rf data models metrics plots reports
