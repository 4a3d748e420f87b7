"""The driver of a training stage is SIGKILLed mid-run, then the same command is run again.

The stage (``python -m pipelines.train --family vae`` on the smoke data, 6 epochs) runs
in a session of its own; once MLflow has its epoch 1, the whole process group
(driver, the local Ray it started, the workers) gets SIGKILL, as on a crashed
or pre-empted machine. The rerun must resume the Ray run from its last
checkpoint, continue the same MLflow run (same id, no second run), leave every
epoch once in MLflow and in the curves, train again at most the epoch that was
in progress, end FINISHED, and write the weights an uninterrupted run writes.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from ruamel.yaml import YAML
from smoke_data import prepare_smoke

from pipelines.config import write_profile_params

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
EPOCHS = 6


def _stage(work: Path, out: str, storage: str) -> list[str]:
    return [sys.executable, "-m", "pipelines.train", "--family", "vae", "--params", "params.yaml",
            "--prepared", "data/prepared", "--model", f"{out}/model", "--reports", f"{out}/reports", "--metrics", f"{out}/metrics.json",
            "--plots", f"{out}/curves.csv", "--storage", storage]


def _runs(client):
    experiment = client.get_experiment_by_name("capsynth")
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], filter_string="tags.`capsynth.stage` = 'train_vae'")


def _logged_steps(client, run_id: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, "train_elbo"))


@pytest.fixture
def work(tmp_path_factory):
    work, _ = prepare_smoke(tmp_path_factory, "driver-crash")
    write_profile_params(REPO / "params.yaml", "smoke", work / "params.yaml")
    yaml = YAML()
    params = yaml.load(work / "params.yaml")
    params["train_vae"]["train"]["epochs"] = EPOCHS
    yaml.dump(params, work / "params.yaml")
    return work


def test_killed_driver_rerun_continues_the_same_run_with_each_epoch_once(work):
    from mlflow import MlflowClient

    uri = f"sqlite:///{work / 'mlflow.db'}"
    env = {**{k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "DVC_ROOT", "DVC_EXP_NAME")},
           "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(REPO)}
    client = MlflowClient(uri)
    log = (work / "first.log").open("w")
    first = subprocess.Popen(_stage(work, "crashed", "ray_results"), cwd=work, env=env, stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 400
    try:
        while True:
            assert first.poll() is None, f"the stage ended before it was killed:\n{(work / 'first.log').read_text()[-3000:]}"
            assert time.monotonic() < deadline, (work / "first.log").read_text()[-3000:]
            runs = _runs(client)
            if runs and max(_logged_steps(client, runs[0].info.run_id), default=-1) >= 1:
                break
            time.sleep(0.5)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        log.close()
    killed_at = time.time()
    [crashed] = _runs(client)
    logged_before = _logged_steps(client, crashed.info.run_id)
    assert crashed.info.status == "RUNNING"  # nobody could close it

    done = subprocess.run(_stage(work, "crashed", "ray_results"), cwd=work, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    [run] = _runs(client)  # the same run, continued: no second one
    assert run.info.run_id == crashed.info.run_id and run.info.status == "FINISHED"
    assert _logged_steps(client, run.info.run_id) == list(range(EPOCHS))
    with open(work / "crashed" / "curves.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == list(range(EPOCHS))
    # the epochs MLflow had before the kill were not trained again: they started before it
    last = sorted((work / "ray_results").glob("vae-*/epoch-*"))[-1]
    started = {row["epoch"]: row for row in torch.load(last / "state.pt", weights_only=True)["history"]}
    assert all(started[e]["epoch_start_time"] < killed_at for e in logged_before)

    straight = subprocess.run(_stage(work, "straight", str(work / "straight_results")), cwd=work, env=env,
                              capture_output=True, text=True, timeout=600)
    assert straight.returncode == 0, straight.stderr[-3000:]
    assert (work / "crashed" / "model" / "vae.pt").read_bytes() == (work / "straight" / "model" / "vae.pt").read_bytes()
