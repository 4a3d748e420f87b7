"""Stage runs and epoch logging: one store per project, exactly-once epochs, resumed and killed runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from components import tracking

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A fresh DVC-less 'repo' as the cwd; MLflow's globals are put back by stage_run itself."""
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "CAPSYNTH_PIPELINE_RUN", "DVC_ROOT", "DVC_EXP_NAME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")


def _steps(client, run_id: str, key: str) -> list[int]:
    return [m.step for m in sorted(client.get_metric_history(run_id, key), key=lambda m: (m.timestamp, m.step))]


def _run_id(client, stage="train_x") -> list:
    experiment = client.get_experiment_by_name(tracking.EXPERIMENT).experiment_id
    return client.search_runs([experiment], filter_string=f"tags.`{tracking.STAGE_TAG}` = '{stage}'")


def test_the_store_is_the_project_roots_and_runs_carry_the_experiment_name(store, tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / ".dvc").mkdir(parents=True)
    temp = repo / ".dvc" / "tmp" / "exps" / "tmp1"
    temp.mkdir(parents=True)
    monkeypatch.chdir(temp)  # where `dvc exp run --temp` runs a stage
    monkeypatch.setenv("DVC_EXP_NAME", "gusty-lamb")
    assert tracking.tracking_uri() == f"sqlite:///{repo.resolve() / 'mlflow.db'}"
    with tracking.stage_run("train_x", params={}):
        pass
    from mlflow import MlflowClient

    [run] = _run_id(MlflowClient(tracking.tracking_uri()))
    assert run.data.tags[tracking.EXPERIMENT_TAG] == "gusty-lamb"
    assert not (temp / "mlflow.db").exists()


def test_each_epoch_is_logged_once_whoever_logs_it(store):
    with tracking.stage_run("train_x", params={}) as run_id:
        controller = tracking.RunLogger(run_id, tracking.tracking_uri())
        assert controller.log_epoch({"loss": 1.0}, step=0)
        assert controller.log_epoch({"loss": 0.9}, step=1)
        assert controller.log_epoch({"loss": 0.8}, step=1)  # a retrained epoch: first values kept
        # the driver's copy at the end: the checkpoint's history, epoch 2 not logged yet
        driver = tracking.RunLogger(run_id, tracking.tracking_uri())
        history = [{"epoch": e, "loss": v, "epoch_start_time": 1e9} for e, v in ((0, 1.0), (1, 0.9), (2, 0.7))]
        assert driver.log_history(history)
    assert _steps(store, run_id, "loss") == [0, 1, 2]
    assert [m.value for m in sorted(store.get_metric_history(run_id, "loss"), key=lambda m: m.step)] == [1.0, 0.9, 0.7]
    assert store.get_metric_history(run_id, "epoch_start_time") == []


def test_a_store_that_fails_costs_a_warning_and_the_epochs_go_in_later(store, monkeypatch, caplog):
    with tracking.stage_run("train_x", params={}) as run_id:
        logger = tracking.RunLogger(run_id, tracking.tracking_uri())
        client = logger._get()
        real = client.log_batch

        def down(*args, **kwargs):
            raise ConnectionError("tracking server gone")

        monkeypatch.setattr(client, "log_batch", down)
        assert logger.log_epoch({"loss": 1.0}, step=0) is False  # no exception: training goes on
        assert "could not log epoch(s) [0]" in caplog.text
        monkeypatch.setattr(client, "log_batch", real)
        assert logger.log_epoch({"loss": 0.9}, step=1)
    assert _steps(store, run_id, "loss") == [0, 1]


def test_log_history_gives_up_with_a_warning_not_an_error(store, monkeypatch, caplog):
    monkeypatch.setattr(tracking.RunLogger, "RETRIES", (0.0,))
    with tracking.stage_run("train_x", params={}) as run_id:
        logger = tracking.RunLogger(run_id, tracking.tracking_uri())
        monkeypatch.setattr(logger._get(), "log_batch", lambda *a, **k: (_ for _ in ()).throw(OSError("down")))
        assert logger.log_history([{"epoch": 0, "loss": 1.0}]) is False
    assert "lacks epoch(s) [0]" in caplog.text


def test_an_unfinished_run_with_the_same_key_is_continued_a_finished_one_is_not(store):
    with pytest.raises(RuntimeError):
        with tracking.stage_run("train_x", params={"a": 1}, resume_key="k1") as first:
            raise RuntimeError("worker died for good")
    assert store.get_run(first).info.status == "FAILED"
    with tracking.stage_run("train_x", params={"a": 1}, resume_key="k1") as second:
        pass
    assert second == first and store.get_run(first).info.status == "FINISHED"
    with tracking.stage_run("train_x", params={"a": 1}, resume_key="k1") as third:
        pass
    assert third != first  # a finished run is a record; a new attempt gets its own
    with tracking.stage_run("train_x", params={"a": 2}, resume_key="k2") as other:
        pass
    assert other not in (first, third)


def test_a_training_run_is_continued_only_for_the_same_ray_run_and_params(store):
    with pytest.raises(RuntimeError):
        with tracking.training_run("train_x", ray_run="x-aaa", params={"a": 1}) as first:
            raise RuntimeError("driver died")
    assert store.get_run(first.run_id).data.tags["ray_run"] == "x-aaa"
    with tracking.training_run("train_x", ray_run="x-bbb", params={"a": 1}) as other_code:
        pass  # another Ray run (code or data changed): a new MLflow run
    assert other_code.run_id != first.run_id
    assert store.get_run(first.run_id).info.status == "FAILED"
    with tracking.training_run("train_x", ray_run="x-aaa", params={"a": 2}) as other_params:
        pass
    assert other_params.run_id != first.run_id
    with tracking.training_run("train_x", ray_run="x-aaa", params={"a": 1}) as again:
        pass
    assert again.run_id == first.run_id and store.get_run(first.run_id).info.status == "FINISHED"


def test_interrupt_ends_the_run_killed(store):
    with pytest.raises(KeyboardInterrupt):
        with tracking.stage_run("train_x", params={}) as run_id:
            raise KeyboardInterrupt
    assert store.get_run(run_id).info.status == "KILLED"


def test_a_run_whose_process_died_is_marked_killed_by_the_next_stage_run(store, tmp_path):
    script = ("import os, sys; from components import tracking\n"
              "with tracking.stage_run('train_x', params={}) as run_id:\n"
              "    print(run_id, flush=True); os._exit(9)\n")  # dies without closing the run, as on SIGKILL
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    dead = proc.stdout.split()[-1]
    assert store.get_run(dead).info.status == "RUNNING"
    with tracking.stage_run("evaluate", params={}):
        pass
    assert store.get_run(dead).info.status == "KILLED"
