"""``capsynth sweep`` on the smoke profile: a Ray Tune search over the stage's own trainer, on 2 CPUs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from components.config import flatten, to_dict
from pipelines import features as features_stage
from pipelines import prepare, sweep
from pipelines.config import load_params, write_profile_params

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def smoke_data(tmp_path_factory, ray_session):
    """The smoke profile's params file, prepared data and features, in a folder of their own."""
    work = tmp_path_factory.mktemp("sweep")
    write_profile_params(REPO / "params.yaml", "smoke", work / "params.yaml")
    params = load_params(work / "params.yaml")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        prepare.run(params.prepare, Path("data/prepared"), Path("reports/prepare.json"), progress=False)
        features_stage.run(params.features, Path("data/prepared"), Path("data/features"), progress=False)
    return work


def test_captioner_sweep_logs_every_trial_and_writes_the_best_config(smoke_data):
    """The CLI in a process of its own: its own local Ray (2 CPUs here), with the dashboard a sweep needs."""
    import mlflow

    work = smoke_data
    uri = f"sqlite:///{work / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    cfg = load_params(work / "params.yaml").sweep["captioner"]
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "sweep", "captioner", "--params", "params.yaml",
                           "--storage", "ray_results", "--out", "reports/sweep_captioner.json"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    print(f"sweep of {cfg.num_samples} trials: {time.perf_counter() - start:.0f} s")
    summary = json.loads((work / "reports/sweep_captioner.json").read_text())
    assert "dvc exp run -S train_captioner." in done.stdout
    assert len(summary["trials"]) == cfg.num_samples and not any(t["error"] for t in summary["trials"])
    assert summary["trials_at_once"] == 1  # 2 CPUs: a 1-CPU worker + the trial's 0.1 CPU, once
    best = summary["best_config"]
    assert set(best) == {f"train_captioner.{k}" for k in cfg.space}
    longest = max(t["epochs"] for t in summary["trials"])
    assert summary["best_value"] == max(t[cfg.metric] for t in summary["trials"] if t["epochs"] == longest)
    args = (work / "reports/sweep_captioner.txt").read_text().split()
    assert args[0::2] == ["-S"] * len(best) and args[1::2] == summary["set_args"]
    # the args parse back (as DVC reads them: YAML values) into a valid config with the best values
    parsed = {key.removeprefix("train_captioner."): YAML(typ="safe", pure=True).load(value)
              for key, value in (arg.split("=", 1) for arg in args[1::2])}
    rebuilt = sweep.apply_overrides(load_params(work / "params.yaml").train_captioner, parsed, "train_captioner")
    assert flatten(to_dict(rebuilt))["train.lr"] == pytest.approx(best["train_captioner.train.lr"])

    client = mlflow.MlflowClient(uri)
    children = client.search_runs([client.get_run(summary["mlflow_run_id"]).info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{summary['mlflow_run_id']}'")
    assert len(children) == cfg.num_samples
    for child in children:
        assert child.info.status == "FINISHED"
        assert set(child.data.params) == set(cfg.space)
        steps = [m.step for m in client.get_metric_history(child.info.run_id, cfg.metric)]
        assert steps == list(range(len(steps))) and steps  # one point per epoch, none twice
    sweep_run = client.get_run(summary["mlflow_run_id"])
    assert sweep_run.data.metrics[f"best_{cfg.metric}"] == pytest.approx(summary["best_value"])
