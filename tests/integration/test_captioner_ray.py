"""The captioner under Ray Train on the smoke profile: the stage, 2-worker DDP, resume, faults, CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import crash_hooks
import ddp_checks
import mlflow_checks
import pytest

from components import families
from components.captioning.inference import caption_images
from components.captioning.io import load_model_dir
from components.train.config import ScalingParams
from components.train.ray_trainer import fit, make_trainer
from components.captioning.fit import train_loop_per_worker
from pipelines import caption as caption_cli
from pipelines import features as features_stage
from pipelines import prepare
from pipelines import train as stage
from pipelines.config import load_params

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, ray_session):
    """prepare + features of the smoke profile, in a folder that is the cwd of each test."""
    work = tmp_path_factory.mktemp("captioner")
    params = load_params(REPO / "params.yaml", profile="smoke")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
        prepare.run(params.prepare, Path("data/prepared"), Path("reports/prepare.json"), progress=False)
        features_stage.run(params.features, Path("data/prepared"), Path("data/features"), progress=False)
    return work, params


@pytest.fixture
def in_smoke(smoke, monkeypatch):
    work, params = smoke
    monkeypatch.chdir(work)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
    return work, params.train_captioner


def _loop_config(work: Path, cfg) -> dict:
    return {"features_dir": str(work / "data/features"), "prepared_dir": str(work / "data/prepared"),
            "model": cfg.model, "train": cfg.train}


def test_stage_writes_model_predictions_metrics_and_curves(in_smoke, capsys):
    work, cfg = in_smoke
    metrics = stage.run(families.get("captioner"), cfg,
                        inputs={"prepared": Path("data/prepared"), "features": Path("data/features")},
                        outputs={"model": Path("models/captioner"), "predictions": Path("data/predictions/captioner"),
                                 "metrics": Path("metrics/train_captioner.json"),
                                 "plots": Path("plots/captioner.csv")},
                        storage=Path("ray_results"))
    saved = json.loads(Path("metrics/train_captioner.json").read_text())
    assert saved == metrics
    for key in ("bleu_4", "cider", "exact_scene_accuracy", "names_all_objects"):
        assert 0.0 <= saved[key] <= (10.0 if key == "cider" else 1.0)
    test = json.loads(Path("data/predictions/captioner/test.json").read_text())
    assert test and set(test[0]) == {"image_id", "caption"}
    curves = Path("plots/captioner.csv").read_text().splitlines()
    assert curves[0].startswith("epoch,train_loss") and len(curves) == 1 + saved["epochs_run"]
    loaded = load_model_dir("models/captioner")
    assert loaded.extra["features"]["backbone"] == "resnet18"
    # the CLI engine captions an image file with the backbone recorded in the folder
    images = sorted(Path("data/prepared/synthetic/images").glob("*.png"))[:2]
    captions = caption_images(images, "models/captioner", beam_size=2)
    assert len(captions) == 2 and all(isinstance(c, str) for c in captions)
    # ... and so does the command line, one line per image
    capsys.readouterr()
    caption_cli.main([str(images[0]), "--model", "models/captioner", "--beam-size", "2"])
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [f"{images[0]}\t{captions[0]}"]


def test_two_worker_ddp_keeps_ranks_in_sync_and_learns(in_smoke, tmp_path):
    work, cfg = in_smoke
    train = dataclasses.replace(cfg.train, epochs=3, threads_per_worker=1, early_stopping_patience=0)
    ddp_checks.send_by_value()
    config = {**_loop_config(work, dataclasses.replace(cfg, train=train)),
              "on_step": ddp_checks.captioner_ranks_in_sync}
    trainer = make_trainer(train_loop_per_worker, config,
                           scaling=ScalingParams(num_workers=2, use_gpu=False, max_failures=0),
                           run_name="ddp", storage_path=str(tmp_path))
    state = fit(trainer)
    losses = [h["train_loss"] for h in state["history"]]
    assert len(losses) == 3 and losses[-1] < losses[0]


def test_failure_restarts_from_checkpoint_without_losing_or_repeating_epochs(in_smoke, tmp_path):
    work, cfg = in_smoke
    train = dataclasses.replace(cfg.train, epochs=3, threads_per_worker=1, early_stopping_patience=0,
                                fail_at_epoch=1)
    logger = mlflow_checks.fresh_run_logger("faulty-captioner")
    config = _loop_config(work, dataclasses.replace(cfg, train=train))
    scaling = ScalingParams(num_workers=2, use_gpu=False, max_failures=1)
    state = fit(make_trainer(train_loop_per_worker, config, scaling=scaling, run_name="faulty",
                             storage_path=str(tmp_path), logger=logger), logger=logger)
    assert [h["epoch"] for h in state["history"]] == [0, 1, 2]
    assert list((tmp_path / "faulty").glob("injected-failure-epoch-1"))
    # the MLflow run has each epoch once: none lost to the failure, none repeated by the restart
    assert mlflow_checks.logged_steps(logger, "train_loss") == [0, 1, 2]


def test_worker_sigkill_keeps_each_epoch_once_and_the_weights_of_an_uninterrupted_run(in_smoke, tmp_path):
    """Rank 0's worker is SIGKILLed after the first step of epoch 2: the restart resumes from the
    epoch-1 checkpoint, MLflow and the curves have each epoch once, the weights equal a straight run's."""
    import torch

    work, cfg = in_smoke
    train = dataclasses.replace(cfg.train, epochs=4, threads_per_worker=1, early_stopping_patience=0)
    config = _loop_config(work, dataclasses.replace(cfg, train=train))
    scaling = ScalingParams(num_workers=1, use_gpu=False, max_failures=1)
    flag = tmp_path / "killed"
    crash_hooks.send_by_value()
    logger = mlflow_checks.fresh_run_logger("sigkill-captioner")
    killed = fit(make_trainer(train_loop_per_worker, {**config, "on_step": crash_hooks.captioner_sigkill_at(flag, 2)},
                              scaling=scaling, run_name="sigkill", storage_path=str(tmp_path), logger=logger),
                 logger=logger)
    assert flag.exists()
    assert [h["epoch"] for h in killed["history"]] == [0, 1, 2, 3]
    assert mlflow_checks.logged_steps(logger, "val_cider") == [0, 1, 2, 3]
    straight = fit(make_trainer(train_loop_per_worker, config, scaling=scaling, run_name="straight",
                                storage_path=str(tmp_path)))
    for key in ("model", "best_model"):
        assert all(torch.equal(killed[key][k], straight[key][k]) for k in straight[key]), key


def test_rerun_with_same_name_resumes(in_smoke, tmp_path):
    work, cfg = in_smoke
    scaling = ScalingParams(num_workers=1, use_gpu=False, max_failures=0)
    short = dataclasses.replace(cfg.train, epochs=1, threads_per_worker=1, early_stopping_patience=0)
    fit(make_trainer(train_loop_per_worker, _loop_config(work, dataclasses.replace(cfg, train=short)),
                     scaling=scaling, run_name="resume", storage_path=str(tmp_path)))
    longer = dataclasses.replace(short, epochs=2)
    state = fit(make_trainer(train_loop_per_worker, _loop_config(work, dataclasses.replace(cfg, train=longer)),
                             scaling=scaling, run_name="resume", storage_path=str(tmp_path)))
    assert [h["epoch"] for h in state["history"]] == [0, 1]
