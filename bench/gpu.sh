#!/usr/bin/env bash
# The GPU check (bench/gpu.py): features, every family's training under Ray Train on one GPU
# (NCCL, bf16 autocast) and beam search, with images/s, samples/s and peak memory.
#   bash bench/gpu.sh          on a CUDA machine (under 5 min on one H100)
#   bash bench/gpu.sh --dry    on the CPU with tiny sizes: checks the script (CI runs it)
# Sets itself up like `make`: the project's .venv, built if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
make --silent setup
export RAY_USAGE_STATS_ENABLED=0
exec .venv/bin/python -m bench.gpu "$@"
