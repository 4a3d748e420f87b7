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


def test_epoch_progress_line_shows_the_stage_epoch_of_planned_and_chosen_metrics():
    from components.train.ray_trainer import EpochProgress

    progress = EpochProgress("train_vae", 30, ("train_elbo", "val_elbo", "missing", "train_images_per_s"))
    line = progress.line({"epoch": 2, "train_elbo": -12345.678, "val_elbo": -12001.0, "train_images_per_s": 625.24,
                          "kl": 3.0}, seconds=8.94)
    assert line == "train_vae  epoch   3/30  train_elbo -1.235e+04  val_elbo -1.2e+04  train_images_per_s 625.2  (8.9 s)"
    assert EpochProgress("train_toy", None, ("loss",)).line({"epoch": 0, "loss": 0.5}) == "train_toy  epoch   1  loss 0.5"


def test_a_local_ray_start_that_loses_a_port_race_is_retried_with_another_port(monkeypatch):
    import ray

    from components import ray_adapter

    calls, shutdowns = [], []

    def init(**kwargs):
        calls.append(kwargs["dashboard_port"])
        if len(calls) == 1:
            raise RuntimeError("Failed to start the dashboard: address already in use")

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "shutdown", lambda: shutdowns.append(1))
    monkeypatch.setattr(ray_adapter.time, "sleep", lambda s: None)
    ports = iter([41001, 41002])
    monkeypatch.setattr(ray_adapter, "free_port", lambda: next(ports))
    ray_adapter.init_ray(num_cpus=1)
    assert calls == [41001, 41002] and shutdowns == [1]


def test_ray_train_advisories_stay_out_of_the_console_even_after_ray_train_configures_its_loggers(monkeypatch):
    """The setup hook of every Ray worker process filters Ray Train's 'resource request' advisory below ERROR;
    Ray Train's own dictConfig of ``ray.train`` (which resets child loggers' levels) keeps the filter."""
    import logging
    import logging.config

    import ray

    from components import ray_adapter

    kwargs = {}
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: kwargs.update(kw))
    ray_adapter.init_ray(num_cpus=1)
    hook = kwargs["runtime_env"]["worker_process_setup_hook"]
    assert hook == "components.ray_adapter.quiet_ray_logs"

    [name] = ray_adapter.QUIETED_LOGGERS
    logger = logging.getLogger(name)
    seen: list[int] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.levelno)

    parent = logging.getLogger("ray.train")
    saved = (parent.level, parent.propagate, list(parent.handlers), logger.level, logger.propagate)
    try:
        ray_adapter.quiet_ray_logs()
        ray_adapter.quiet_ray_logs()  # idempotent: one filter
        logging.config.dictConfig({"version": 1, "disable_existing_loggers": False,
                                   "handlers": {"keep": {"()": Keep}},
                                   "loggers": {"ray.train": {"level": "DEBUG", "handlers": ["keep"],
                                                             "propagate": False}}})
        logger.warning("Failed to send resource request")
        logger.error("a real error")
        assert seen == [logging.ERROR]
        assert len(logger.filters) == 1
    finally:
        logger.filters.clear()
        parent.level, parent.propagate, parent.handlers, logger.level, logger.propagate = saved
