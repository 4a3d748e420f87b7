"""MLflow checks shared by the integration tests (imported as ``mlflow_checks``)."""

from __future__ import annotations

from components import tracking


def fresh_run_logger(name: str) -> tracking.RunLogger:
    """A new run in the store of ``MLFLOW_TRACKING_URI`` and the logger rank 0 writes it with."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking.tracking_uri())
    experiment = client.get_experiment_by_name("tests") or client.get_experiment(client.create_experiment("tests"))
    run = client.create_run(experiment.experiment_id, run_name=name)
    return tracking.RunLogger(run.info.run_id, tracking.tracking_uri())


def logged_steps(logger: tracking.RunLogger, metric: str) -> list[int]:
    """The steps (epochs) at which ``metric`` was logged into the logger's run, in logging order."""
    from mlflow import MlflowClient

    history = MlflowClient(logger.uri).get_metric_history(logger.run_id, metric)
    return [m.step for m in sorted(history, key=lambda m: m.timestamp)]
