# capsynth — the two commands of the quick start, and a few more.
#   make demo   set up (venv + install) and run the whole pipeline: dvc repro
#   make test   set up (PostgreSQL included, for the tracking-server test) and run the test suite
SHELL := /bin/bash
VENV ?= .venv
PYTHON_BOOT ?= $(shell command -v python3.11 || command -v python3)
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# the venv's tools (dvc, ray, mlflow, python) come first for every recipe
export PATH := $(abspath $(VENV))/bin:$(PATH)
export DVC_NO_ANALYTICS := 1
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: setup postgres demo test test-fast smoke compare profile mlflow-ui clean

# pip -qq: errors only (a machine's pip configuration may add a warning per package; the build
# backend's notes on editable installs are not the user's business)
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	@echo "setting up $(VENV): pip install -c constraints.txt -e '.[dev]' (once; a few minutes)"
	@$(PY) -m pip install --quiet --quiet --upgrade pip
	@$(PY) -m pip install --quiet --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)

# PostgreSQL's server programs, for the tracking-server test (tests/e2e/test_tracking_server.py starts its
# own PostgreSQL and `mlflow server` on 127.0.0.1): Debian's package when initdb is absent (root, or sudo)
PG_INITDB = $(firstword $(shell command -v initdb) $(wildcard /usr/lib/postgresql/*/bin/initdb))
postgres:
	@if [ -n "$(PG_INITDB)" ]; then echo "PostgreSQL: $(PG_INITDB)"; else \
	  echo "PostgreSQL absent: installing Debian's postgresql package"; \
	  sudo=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$sudo apt-get update -q && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql; fi

demo: setup
	dvc repro
	@echo
	dvc metrics show
	@echo
	@echo "demo done: metrics/{captioner,vae,gan}.json above; open reports/index.html in a browser"
	@echo "(README.md §What the demo produces, §Evaluation)"

test: setup postgres
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow"

# the pipeline on the tiny smoke profile, as a DVC experiment: DVC writes the
# profile into params.yaml (git checkout params.yaml restores the default)
smoke: setup
	dvc exp run $$($(PY) -m pipelines.cli profile smoke)

# the README's VAE and GAN comparisons: each setting over seeds 0 1 2 as queued DVC
# experiments, two at a time, up to the evaluate stage (its FID/KID); summaries in
# seeds/*.json. The stages a setting does not change are restored from DVC's run
# cache. The captioner trains 1 epoch in these experiments: evaluate's VAE and GAN
# numbers do not read it, and its 10 epochs would add 20 min to the first two.
SEEDS = capsynth seeds --seeds 0 1 2 -j 2 --stage evaluate -S train_captioner.train.epochs=1
DCGAN = -S train_gan.model.loss=non_saturating -S train_gan.model.d_norm=batch \
	-S train_gan.model.spectral_norm=false -S train_gan.train.augment=none -S train_gan.train.epochs=10 \
	-S train_gan.train.lr_g=0.0004 -S 'train_gan.train.betas=[0.5,0.999]'
VAE_METRICS = --metrics metrics/train_vae.json metrics/vae.json
GAN_METRICS = --metrics metrics/train_gan.json metrics/gan.json
VAE_RES1 = train_vae.train.seed --name vae-res1 $(VAE_METRICS)
VAE_RES0 = train_vae.train.seed --name vae-res0 -S train_vae.model.decoder_res_blocks=0 $(VAE_METRICS)
GAN_SN = train_gan.train.seed --name gan-sn $(GAN_METRICS)
GAN_DCGAN = train_gan.train.seed --name gan-dcgan $(DCGAN) $(GAN_METRICS)
# all twelve experiments are queued first, so that both workers stay busy;
# then each setting is waited for and summarised in turn
compare: setup
	dvc repro features
	$(SEEDS) $(VAE_RES1) --queue-only
	$(SEEDS) $(VAE_RES0) --queue-only
	$(SEEDS) $(GAN_SN) --queue-only
	$(SEEDS) $(GAN_DCGAN) --queue-only
	$(SEEDS) $(VAE_RES1)
	$(SEEDS) $(VAE_RES0)
	$(SEEDS) $(GAN_SN)
	$(SEEDS) $(GAN_DCGAN)

# the MLflow UI on this machine only: http://127.0.0.1:5000
mlflow-ui: setup
	mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

clean:
	rm -rf data models metrics plots reports
