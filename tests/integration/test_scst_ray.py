"""The ``finetune_captioner`` stage (family ``scst``) under Ray Train on the smoke profile: the stage's
outputs and MLflow run, 2-worker DDP through the sampling pass, a real SIGKILL resumed exactly once."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import crash_hooks
import ddp_checks
import mlflow_checks
import pytest

from components import families
from components.captioning.finetune import train_loop_per_worker
from components.captioning.io import load_model_dir
from components.train.config import ScalingParams
from components.train.ray_trainer import fit, make_trainer
from pipelines import features as features_stage
from pipelines import prepare
from pipelines import train as stage
from pipelines.config import load_params

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
INPUTS = {"prepared": Path("data/prepared"), "features": Path("data/features"), "captioner": Path("models/captioner")}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, ray_session):
    """prepare, features and the cross-entropy captioner of the smoke profile; the folder is each test's cwd."""
    work = tmp_path_factory.mktemp("scst")
    params = load_params(REPO / "params.yaml", profile="smoke")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
        prepare.run(params.prepare, Path("data/prepared"), Path("reports/prepare.json"), progress=False)
        features_stage.run(params.features, Path("data/prepared"), Path("data/features"), progress=False)
        stage.run(families.get("captioner"), params.train_captioner,
                  inputs={"prepared": Path("data/prepared"), "features": Path("data/features")},
                  outputs={"model": Path("models/captioner"), "predictions": Path("data/predictions/captioner"),
                           "metrics": Path("metrics/train_captioner.json"), "plots": Path("plots/captioner.csv")},
                  storage=Path("ray_results"))
    return work, params


@pytest.fixture
def in_smoke(smoke, monkeypatch):
    work, params = smoke
    monkeypatch.chdir(work)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
    return work, params.finetune_captioner


def _loop_config(work: Path, train) -> dict:
    return {"features_dir": str(work / "data/features"), "prepared_dir": str(work / "data/prepared"),
            "captioner_dir": str(work / "models/captioner"), "train": train}


def test_stage_writes_a_captioner_folder_predictions_curves_and_a_run_beside_the_cross_entropy_one(in_smoke):
    from mlflow import MlflowClient

    work, cfg = in_smoke
    scst = families.get("scst")
    outputs = {name: Path(path) for name, path in scst.default_outputs().items()}
    metrics = stage.run(scst, cfg, inputs=INPUTS, outputs=outputs, storage=Path("ray_results"))
    assert json.loads(Path("metrics/train_scst.json").read_text()) == metrics
    assert metrics["reward"] == cfg.train.reward and metrics["epochs_run"] == cfg.train.epochs
    assert {"cider", "bleu_4", "names_all_objects", "start_val_reward", "best_val_reward"} <= set(metrics)
    assert metrics["best_val_reward"] >= metrics["start_val_reward"]  # never worse than where it started
    curves = Path("plots/scst.csv").read_text().splitlines()
    assert curves[0].startswith("epoch,train_reward,train_baseline") and len(curves) == 1 + cfg.train.epochs
    loaded = load_model_dir("models/scst")  # the captioner's format: caption, registry and serving read it
    assert loaded.extra["scst"]["reward"] == cfg.train.reward and loaded.extra["features"]["backbone"]
    assert json.loads(Path("data/predictions/scst/test.json").read_text())
    client = MlflowClient()
    runs = {r.data.tags["capsynth.stage"]: r for r in client.search_runs(
        [client.get_experiment_by_name("capsynth").experiment_id])}
    assert {"train_captioner", "finetune_captioner"} <= set(runs)
    run = runs["finetune_captioner"]
    assert run.data.tags["finetuned_from"] and run.data.params["train.reward"] == cfg.train.reward
    history = client.get_metric_history(run.info.run_id, "train_reward")
    assert sorted(m.step for m in history) == list(range(cfg.train.epochs))


def test_two_worker_ddp_keeps_ranks_in_sync_through_the_sampling_pass(in_smoke, tmp_path):
    work, cfg = in_smoke
    train = dataclasses.replace(cfg.train, epochs=1, threads_per_worker=1)
    ddp_checks.send_by_value()
    trainer = make_trainer(train_loop_per_worker,
                           {**_loop_config(work, train), "on_step": ddp_checks.captioner_ranks_in_sync},
                           scaling=ScalingParams(num_workers=2, use_gpu=False, max_failures=0),
                           run_name="scst-ddp", storage_path=str(tmp_path))
    state = fit(trainer)
    assert [h["epoch"] for h in state["history"]] == [0]


def test_worker_sigkill_keeps_each_epoch_once_and_the_weights_of_an_uninterrupted_run(in_smoke, tmp_path):
    import torch

    work, cfg = in_smoke
    train = dataclasses.replace(cfg.train, epochs=3, threads_per_worker=1)
    scaling = ScalingParams(num_workers=1, use_gpu=False, max_failures=1)
    flag = tmp_path / "killed"
    crash_hooks.send_by_value()
    logger = mlflow_checks.fresh_run_logger("sigkill-scst")
    killed = fit(make_trainer(train_loop_per_worker,
                              {**_loop_config(work, train), "on_step": crash_hooks.captioner_sigkill_at(flag, 1)},
                              scaling=scaling, run_name="sigkill", storage_path=str(tmp_path), logger=logger),
                 logger=logger)
    assert flag.exists()
    assert [h["epoch"] for h in killed["history"]] == [0, 1, 2]
    assert mlflow_checks.logged_steps(logger, "train_reward") == [0, 1, 2]
    straight = fit(make_trainer(train_loop_per_worker, _loop_config(work, train), scaling=scaling,
                                run_name="straight", storage_path=str(tmp_path)))
    for key in ("model", "best_model"):
        assert all(torch.equal(killed[key][k], straight[key][k]) for k in straight[key]), key
    drop = ("train_samples_per_s", "epoch_seconds")
    assert [{k: v for k, v in h.items() if k not in drop} for h in killed["history"]] == \
        [{k: v for k, v in h.items() if k not in drop} for h in straight["history"]]
