"""The TorchTrainer factory without a Ray instance: shared storage from the environment, scaling from params."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from components.train.config import ScalingParams
from components.train.ray_trainer import STORAGE_ENV, make_trainer
from pipelines.config import load_params

REPO = Path(__file__).resolve().parents[2]


def _loop(config: dict) -> None:
    """A training loop that is never run here."""


def test_shared_storage_from_the_environment_replaces_the_stage_folder(tmp_path, monkeypatch):
    monkeypatch.delenv(STORAGE_ENV, raising=False)
    scaling = ScalingParams(num_workers=1, use_gpu=False, max_failures=0)
    local = make_trainer(_loop, {}, scaling=scaling, run_name="run", storage_path=str(tmp_path / "ray_results"))
    assert local.run_config.storage_path == str(tmp_path / "ray_results")
    monkeypatch.setenv(STORAGE_ENV, str(tmp_path / "nfs"))
    shared = make_trainer(_loop, {}, scaling=scaling, run_name="run", storage_path="ray_results")
    assert shared.run_config.storage_path == str(tmp_path / "nfs") and shared.run_config.name == "run"
    assert shared.train_loop_config["storage_dir"] == str(tmp_path / "nfs" / "run")


def test_workers_and_their_cpus_come_from_the_stage_params_group(tmp_path):
    cfg = load_params(REPO / "params.yaml").train_gan
    scaling = dataclasses.replace(cfg.scaling, use_gpu=False)  # None would ask a Ray cluster
    trainer = make_trainer(_loop, {}, scaling=scaling, cpus_per_worker=cfg.train.threads_per_worker,
                           run_name="run", storage_path=str(tmp_path))
    assert trainer.scaling_config.num_workers == cfg.scaling.num_workers
    assert trainer.scaling_config.resources_per_worker == {"CPU": cfg.train.threads_per_worker}
    assert trainer.run_config.failure_config.max_failures == cfg.scaling.max_failures
