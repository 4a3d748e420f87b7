"""``capsynth sweep`` on the smoke profile: a Ray Tune search over the stage's own trainer, on 2 CPUs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.config import ConfigError
from pipelines import features as features_stage
from pipelines import prepare, sweep
from pipelines.config import load_params, write_profile_params

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def smoke_data(tmp_path_factory):
    """The smoke profile's params file, prepared data and features, in a folder of their own."""
    work = tmp_path_factory.mktemp("sweep")
    write_profile_params(REPO / "params.yaml", "smoke", work / "params.yaml")
    params = load_params(work / "params.yaml")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        prepare.run(params.prepare, Path("data/prepared"), Path("reports/prepare.json"), progress=False)
        features_stage.run(params.features, Path("data/prepared"), Path("data/features"), progress=False)
    return work


def test_captioner_sweep_logs_every_trial_and_writes_the_best_config(smoke_data, ray_session, monkeypatch):
    import mlflow

    work = smoke_data
    monkeypatch.chdir(work)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    cfg = load_params("params.yaml").sweep.captioner
    summary = sweep.run("captioner", params_file="params.yaml", prepared=Path("data/prepared"),
                        features=Path("data/features"), storage=Path("ray_results"),
                        out=Path("reports/sweep_captioner.json"))

    assert json.loads(Path("reports/sweep_captioner.json").read_text()) == json.loads(json.dumps(summary))
    assert len(summary["trials"]) == cfg.num_samples and not any(t["error"] for t in summary["trials"])
    assert summary["trials_at_once"] == 1  # 2 CPUs: a 1-CPU worker + the trial's 0.1 CPU, once
    best = summary["best_config"]
    assert set(best) == {f"train_captioner.{k}" for k in cfg.space}
    values = [t[cfg.metric] for t in summary["trials"]]
    assert summary["best_value"] == max(values)
    args = Path("reports/sweep_captioner.txt").read_text().split()
    assert args[0::2] == ["-S"] * len(best) and args[1::2] == summary["set_args"]
    # the args parse back into a valid config
    assert {a.split("=")[0] for a in args[1::2]} == set(best)

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


def test_a_typo_in_the_space_names_the_key(smoke_data):
    params = load_params(smoke_data / "params.yaml")
    space = {**params.sweep.captioner.space, "train.learning_rate": params.sweep.captioner.space["train.lr"]}
    with pytest.raises(ConfigError, match=r"'train.learning_rate' is not a param of train_captioner"):
        sweep.check_space(space, params.train_captioner, "train_captioner")


def test_one_trial_larger_than_the_cluster_is_refused(smoke_data):
    import dataclasses

    params = load_params(smoke_data / "params.yaml")
    base = params.train_captioner
    wide = dataclasses.replace(base, scaling=dataclasses.replace(base.scaling, num_workers=3, use_gpu=False))
    with pytest.raises(ConfigError, match=r"needs 3.1 CPU"):
        sweep.trials_at_once(params.sweep.captioner, wide, {"CPU": 2.0})
    assert sweep.trials_at_once(params.sweep.captioner, base, {"CPU": 2.0}) == 1
    assert sweep.trials_at_once(params.sweep.captioner, base, {"CPU": 16.0}) == 2  # num_samples caps it
    with pytest.raises(ConfigError, match="needs 1.1 CPU"):
        sweep.trials_at_once(params.sweep.captioner, base, {"CPU": 1.0})
