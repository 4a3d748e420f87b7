"""``bench.scaling --dry`` prints its table: every part for every N and worker count, with plausible figures.

The bench runs as a process of its own, with its own local Ray: two model actors and a decode task
need 3 logical CPUs, one more than the session's shared Ray instance has.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def test_scaling_bench_dry_run_prints_its_table(tmp_path):
    from bench.scaling.__main__ import SIZES
    from components.features.backbones import get_spec
    from pipelines.config import load_params

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, "-m", "bench.scaling", "--dry", "--params", str(REPO / "params.yaml")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    out = done.stdout
    print(out)
    assert out.startswith("$ .venv/bin/python -m bench.scaling --dry"), out
    cores = os.cpu_count() or 1
    f = load_params(REPO / "params.yaml").features
    bytes_per_value = {"float16": 2, "float32": 4}[f.dtype]
    for n in SIZES["dry"]:
        for part, unit in (("features", "images/s"), ("captioner", "captions/s"), ("vae", "images/s")):
            for workers in (1, 2):
                line = re.search(rf"^{part} +{n} +{workers} +(\d+) +([0-9.]+) +{re.escape(unit)} +([0-9.]+)$", out,
                                 re.M)
                assert line, f"no {part} row for N {n}, {workers} worker(s):\n{out}"
                assert float(line.group(2)) > 0 and float(line.group(3)) > 0
                if part != "features":  # training splits the cores over the workers
                    assert int(line.group(1)) == max(1, cores // workers)
        load = re.search(rf"^load +{n} .* ([0-9.]+) +([0-9.]+) +([0-9.]+)$", out, re.M)
        assert load, f"no load row for N {n}:\n{out}"
        peak, formula, ratio = map(float, load.groups())
        row_bytes = (f.grid_size ** 2 + 1) * get_spec(f.backbone).stage_channels(f.stage) * bytes_per_value + 8
        assert formula == pytest.approx(n * row_bytes / 1e6, abs=0.05)
        # At least the formula: the arrays are resident. Here, at a few MB, the Parquet reader's fixed cost
        # (~20 MB) dominates: ratios of 5-10 were measured (1.2 at 6,000 images, 1.06 at 24,000).
        assert 1 <= ratio <= 20 and ratio == pytest.approx(peak / formula, rel=0.05)


def test_scaling_bench_load_only_prints_the_load_rows(tmp_path):
    """``--load-only``: random features of params.yaml's shape, the load rows alone (no Ray, no training)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "bench.scaling", "--load-only", "--sizes", "300", "700",
                           "--params", str(REPO / "params.yaml")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    out = done.stdout
    assert not re.search(r"^(features|captioner|vae) ", out, re.M), out
    for n in (300, 700):
        load = re.search(rf"^load +{n} .* ([0-9.]+) +([0-9.]+) +([0-9.]+)$", out, re.M)
        assert load, f"no load row for N {n}:\n{out}"
        peak, formula, ratio = map(float, load.groups())
        assert 1 <= ratio <= 20 and ratio == pytest.approx(peak / formula, rel=0.05)
