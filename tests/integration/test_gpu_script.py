"""The GPU check script (``bench/gpu.sh`` → ``bench.gpu``) runs end to end on the CPU in its dry mode.

On a GPU it times features, every family's training under Ray Train and beam search; here it runs
the same code with tiny sizes, so the script a lent GPU will run is known to work (README §Speed).
"""

from __future__ import annotations

import re

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_gpu_script_dry_run_prints_every_figure(ray_session, capsys, monkeypatch, tmp_path):
    from bench import gpu

    monkeypatch.chdir(tmp_path)  # the trainers' MLflow-free runs write nothing into the repo
    from pathlib import Path

    params = Path(__file__).resolve().parents[2] / "params.yaml"
    assert gpu.main(["--dry", "--params", str(params)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^features .* ([0-9.]+) images/s", out, re.M)
    for family in ("captioner", "vae", "gan", "imagine"):
        line = re.search(rf"^train +{family} +(\d+) steps: +([0-9.]+) (captions|images)/s .*backend (\w+)", out, re.M)
        assert line, f"no training line for {family}:\n{out}"
        assert int(line.group(1)) > 0 and float(line.group(2)) > 0
        assert line.group(4) == "gloo"  # the CPU dry run; NCCL on a GPU
    assert re.search(r"^beam .* ([0-9.]+) images/s", out, re.M)


def test_gpu_script_refuses_to_time_without_a_gpu():
    import torch

    from bench import gpu

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(SystemExit):
        gpu.main([])
