"""Child runs of a sweep: written by the driver after the trials, one point per step, never left RUNNING."""

from __future__ import annotations

from components import tracking


def test_child_run_holds_params_history_and_its_end_status(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(uri)
    parent = client.create_run(client.create_experiment("sweeps")).info.run_id
    history = [{"step": 0, "val_cider": 0.1, "train_loss": 3.0}, {"step": 1, "val_cider": 0.2, "train_loss": 2.5}]
    done = tracking.log_child_run(parent, "trial-a", params={"train.lr": 0.01, "api_token": "x"}, history=history,
                                  tags={"capsynth.trial": "a"})
    failed = tracking.log_child_run(parent, "trial-b", params={}, history=[], tags={}, failed=True)

    run = client.get_run(done)
    assert run.data.tags["mlflow.parentRunId"] == parent and run.data.tags["capsynth.trial"] == "a"
    assert run.data.params == {"train.lr": "0.01"}  # the secret-looking key is dropped
    assert [(m.step, m.value) for m in client.get_metric_history(done, "val_cider")] == [(0, 0.1), (1, 0.2)]
    assert run.info.status == "FINISHED" and client.get_run(failed).info.status == "FAILED"
