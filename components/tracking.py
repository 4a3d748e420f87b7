"""MLflow adapter for runs: with :mod:`components.registry` (the model registry), the only modules that talk to MLflow.

* Default store: ``sqlite:///<repo>/mlflow.db`` (absolute), artifacts in
  ``<repo>/mlartifacts``, where ``<repo>`` is the project root
  (:func:`components.workspace.project_root`: the same store for ``dvc repro``,
  ``dvc exp run``, ``--temp`` and ``--queue``); ``MLFLOW_TRACKING_URI``
  overrides both. Each stage run is tagged with its DVC experiment name.
* One run per stage, opened on the driver by :func:`stage_run`, nested under a
  pipeline run: all stages of one pipeline version (git commit + params file
  content, or ``CAPSYNTH_PIPELINE_RUN`` when set) share a parent run, so the UI
  shows a pipeline run and its stages.
* Per-epoch metrics go in by run id through :class:`RunLogger`, from the
  Ray Train controller once an epoch's checkpoint is persisted, exactly once
  per epoch (a step already in the run is never logged again), never raising.
* A training stage opens its run with :func:`training_run` (its Ray run name
  and params are the run's resume key): rerun after a killed driver, it
  continues the same, unfinished MLflow run. A run
  whose process died (SIGKILL) is marked KILLED by the next stage run on the
  same host; SIGTERM / Ctrl-C end it as KILLED, an error as FAILED.
* A remote tracking server that does not answer fails the stage at once, with
  the URI in the message.
* A stage run puts MLflow's process-wide tracking URI and active experiment
  back as they were; secret-looking keys and URL credentials are never logged.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from components import dvc_datasets, workspace

log = logging.getLogger(__name__)

EXPERIMENT = "capsynth"
PIPELINE_TAG = "capsynth.pipeline_run"
STAGE_TAG = "capsynth.stage"
EXPERIMENT_TAG = "capsynth.dvc_experiment"  # DVC's experiment name (dvc exp run); absent under dvc repro
RESUME_TAG = "capsynth.resume_key"
HOST_TAG, PID_TAG = "capsynth.host", "capsynth.pid"  # the process that holds a RUNNING run
# per-epoch report fields that are not curves: the step itself, a wall-clock stamp
NOT_CURVES = ("epoch", "epoch_start_time")
# keys that must never be logged as params or tags
_SECRET_WORDS = ("password", "secret", "token", "access_key", "api_key", "credential")
_URL_CREDENTIALS = re.compile(r"(\w+://)[^/@\s]+@")


class TrackingUnavailable(RuntimeError):
    """The tracking server cannot be reached."""


def tracking_uri(repo_root: str | os.PathLike | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` or the embedded SQLite store of the project root (or ``repo_root``)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{Path(repo_root or workspace.project_root()).resolve() / 'mlflow.db'}"


def artifact_location(repo_root: str | os.PathLike | None = None) -> str | None:
    """Artifacts beside the embedded store; a server decides its own."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return None
    return (Path(repo_root or workspace.project_root()).resolve() / "mlartifacts").as_uri()


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, naming ``uri``, when an HTTP tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (http only)
            if resp.status >= 500:
                raise TrackingUnavailable(f"MLflow tracking server {uri} answered {resp.status}")
    except urllib.error.HTTPError as err:
        if err.code >= 500:
            raise TrackingUnavailable(f"MLflow tracking server {uri} answered {err.code}") from err
    except (urllib.error.URLError, OSError) as err:
        raise TrackingUnavailable(
            f"MLflow tracking server {uri} is unreachable ({err}); "
            "start it or unset MLFLOW_TRACKING_URI to use the local SQLite store"
        ) from err


def is_secret(key: str) -> bool:
    """A key that names a credential: never logged as a param or tag."""
    return any(word in key.lower() for word in _SECRET_WORDS)


def redact(value: Any) -> str:
    """``value`` as a string with URL credentials (``scheme://user:pass@host``) masked."""
    return _URL_CREDENTIALS.sub(r"\1***@", str(value))


def loggable(items: Mapping[str, Any]) -> dict[str, str]:
    """Params or tags fit to log: secret-looking keys dropped, URL credentials masked."""
    return {k: redact(v) for k, v in items.items() if not is_secret(k)}


def git_commit(repo_root: str | os.PathLike = ".") -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo_root, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def pipeline_run_id(params_file: str | os.PathLike, repo_root: str | os.PathLike = ".") -> str:
    """Groups the stage runs of one pipeline version (commit + params content)."""
    env = os.environ.get("CAPSYNTH_PIPELINE_RUN")
    if env:
        return env
    digest = hashlib.sha256(git_commit(repo_root).encode())
    if Path(params_file).is_file():
        digest.update(Path(params_file).read_bytes())
    return digest.hexdigest()[:12]


@contextlib.contextmanager
def _restore_globals() -> Iterator[None]:
    """Put back MLflow's process-wide tracking URI and active experiment on exit.

    ``mlflow.set_tracking_uri`` / ``set_experiment`` change module globals and
    the ``MLFLOW_TRACKING_URI`` / ``MLFLOW_EXPERIMENT_ID`` environment
    variables; a stage run must not leave them pointing at its store (a
    caller, or the next test, would log into the wrong experiment).
    """
    from mlflow.tracking import fluent
    from mlflow.tracking._tracking_service import utils as service

    saved_env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID")}
    saved_uri, saved_experiment = service._tracking_uri, fluent._active_experiment_id
    try:
        yield
    finally:
        service._tracking_uri, fluent._active_experiment_id = saved_uri, saved_experiment
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _setup(repo_root: str | os.PathLike | None):
    import mlflow

    uri = tracking_uri(repo_root)
    artifacts = artifact_location(repo_root)  # before set_tracking_uri, which sets MLFLOW_TRACKING_URI
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        mlflow.create_experiment(EXPERIMENT, artifact_location=artifacts)
    mlflow.set_experiment(EXPERIMENT)
    return mlflow


def _parent_run(mlflow, pipeline_run: str, tags: Mapping[str, str]) -> str:
    """Find or create the pipeline run that groups this version's stages."""
    found = mlflow.search_runs(
        experiment_names=[EXPERIMENT],
        filter_string=f"tags.`{PIPELINE_TAG}` = '{pipeline_run}' and tags.`{STAGE_TAG}` = 'pipeline'",
        max_results=1, output_format="list",
    )
    if found:
        return found[0].info.run_id
    run = mlflow.MlflowClient().create_run(
        mlflow.get_experiment_by_name(EXPERIMENT).experiment_id,
        run_name=f"pipeline-{pipeline_run}",
        tags={**tags, PIPELINE_TAG: pipeline_run, STAGE_TAG: "pipeline"},
    )
    mlflow.MlflowClient().set_terminated(run.info.run_id)
    return run.info.run_id


@contextlib.contextmanager
def stage_run(
    stage: str,
    *,
    params: Mapping[str, Any],
    params_file: str | os.PathLike = "params.yaml",
    tags: Mapping[str, str] | None = None,
    repo_root: str | os.PathLike | None = None,
    resume_key: str | None = None,
) -> Iterator[str]:
    """Open the stage's MLflow run (nested in the pipeline run); yield its id.

    Args:
        stage: DVC stage name, also the run name.
        params: Flat params to log (secret-looking keys are dropped).
        params_file: Hashed (with the git commit) into the pipeline run id.
        tags: Extra tags (data and feature hashes, backbone...).
        repo_root: Where the embedded store lives (default: the project root).
        resume_key: The identity of this stage's work (a training stage: its
            Ray run name and params). An unfinished run with the same key
            (its driver was killed) is continued instead of opening a new one.
    """
    with _restore_globals():
        mlflow = _setup(repo_root)
        with _open_stage_run(mlflow, stage, params=params, params_file=params_file, tags=tags,
                             resume_key=resume_key) as run_id:
            yield run_id


@contextlib.contextmanager
def training_run(
    stage: str,
    *,
    ray_run: str,
    params: Mapping[str, Any],
    params_file: str | os.PathLike = "params.yaml",
    tags: Mapping[str, str] | None = None,
) -> Iterator[RunLogger]:
    """A training stage's :func:`stage_run`; yields the :class:`RunLogger` of its epochs.

    The resume key is a hash of the stage, the Ray run name (code, params and
    data: :func:`components.train.ray_trainer.stable_run_name`) and the params
    logged: a rerun of identical work after a killed driver continues the same
    MLflow run, and anything else opens a new one. The run is tagged
    ``ray_run`` so the Ray run folder can be found from the UI.
    """
    blob = json.dumps([stage, ray_run, dict(params)], sort_keys=True, default=str).encode()
    key = hashlib.sha256(blob).hexdigest()[:16]
    with stage_run(stage, params=params, params_file=params_file, tags={**(tags or {}), "ray_run": ray_run},
                   resume_key=key) as run_id:
        yield RunLogger(run_id, tracking_uri())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def close_dead_runs(client, experiment_id: str) -> list[str]:
    """Mark KILLED the RUNNING runs whose process on this host is gone (a SIGKILL leaves them RUNNING).

    Returns:
        The ids of the runs it closed.
    """
    host = socket.gethostname()
    found = client.search_runs([experiment_id], filter_string=(
        f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{host}'"), max_results=1000)
    closed = []
    for run in found:
        pid = run.data.tags.get(PID_TAG, "")
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            client.set_terminated(run.info.run_id, "KILLED")
            closed.append(run.info.run_id)
    if closed:
        log.warning("marked %d MLflow run(s) KILLED: their process is gone (%s)", len(closed), ", ".join(closed))
    return closed


def _unfinished_run(client, experiment_id: str, stage: str, resume_key: str) -> str | None:
    """The newest run of ``stage`` with ``resume_key`` that did not finish, if any."""
    found = client.search_runs([experiment_id], filter_string=(
        f"tags.`{RESUME_TAG}` = '{resume_key}' and tags.`{STAGE_TAG}` = '{stage}' "
        "and attributes.status != 'FINISHED'"), order_by=["attributes.start_time DESC"], max_results=1)
    return found[0].info.run_id if found else None


@contextlib.contextmanager
def _open_stage_run(mlflow, stage: str, *, params: Mapping[str, Any], params_file: str | os.PathLike,
                    tags: Mapping[str, str] | None, resume_key: str | None) -> Iterator[str]:
    """The body of :func:`stage_run`, once the store is set up."""
    client = mlflow.MlflowClient()
    experiment_id = mlflow.get_experiment_by_name(EXPERIMENT).experiment_id
    close_dead_runs(client, experiment_id)
    pipeline_run = pipeline_run_id(params_file)
    base_tags = {"git_commit": git_commit(), "dvc_stage": stage, STAGE_TAG: stage, PIPELINE_TAG: pipeline_run,
                 HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()), **(tags or {})}
    if workspace.experiment_name():
        base_tags[EXPERIMENT_TAG] = workspace.experiment_name()
    if resume_key:
        base_tags[RESUME_TAG] = resume_key
    base_tags = loggable(base_tags)
    parent = _parent_run(mlflow, pipeline_run, {"git_commit": base_tags["git_commit"]})  # not one stage's hashes
    resumed = _unfinished_run(client, experiment_id, stage, resume_key) if resume_key else None
    if resumed:
        log.info("continuing the unfinished MLflow run %s of %s", resumed, stage)
        run = mlflow.start_run(run_id=resumed)
        mlflow.set_tags(base_tags)
    else:
        run = mlflow.start_run(run_name=stage, tags={**base_tags, "mlflow.parentRunId": parent})
        clean = loggable(params)
        # MLflow caps one log_params call at 100 params
        items = list(clean.items())
        for i in range(0, len(items), 100):
            mlflow.log_params(dict(items[i : i + 100]))
        # the DVC-tracked data it reads, with the digests of dvc.lock: the runs table's Dataset column
        dvc_datasets.log_stage_inputs(stage, rev=base_tags["git_commit"])
    try:
        yield run.info.run_id
    except (KeyboardInterrupt, SystemExit):
        mlflow.end_run("KILLED")
        raise
    except BaseException:
        mlflow.end_run("FAILED")
        raise
    mlflow.end_run("FINISHED")


def curve_metrics(row: Mapping[str, Any]) -> dict[str, float]:
    """One epoch's report as MLflow metrics: the numbers, without the step and the wall-clock stamp."""
    return {k: float(v) for k, v in row.items() if k not in NOT_CURVES and isinstance(v, (int, float))}


class RunLogger:
    """Logs per-epoch metrics into an existing run by id: each step once, never raising.

    Picklable (the Ray Train controller gets a copy). With ``run_id=None``
    every call is a no-op (tests, benchmarks, sweep trials).

    * **Exactly once.** Before its first write it reads which steps the run
      already has (a rerun after a killed driver continues the same run), and
      it never logs a step twice: an epoch retrained after a crash keeps the
      values first logged for it.
    * **Never fatal.** A store that fails (a server gone, a locked SQLite
      file) costs a warning; the epochs wait in a buffer and go in with the
      next epoch. :meth:`log_history` at the end of training retries a few
      times and logs whatever the checkpoint's history has that the run lacks.
    """

    RETRIES = (1.0, 2.0, 4.0, 8.0)  # seconds between the final attempts of log_history

    def __init__(self, run_id: str | None, uri: str | None):
        self.run_id = run_id
        self.uri = uri
        self._client = None
        self._logged: set[int] | None = None  # steps the run has; None: not read yet
        self._pending: dict[int, dict[str, float]] = {}

    def _get(self):
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def _steps_in_run(self, keys: set[str]) -> set[int]:
        client = self._get()
        return {m.step for key in sorted(keys) for m in client.get_metric_history(self.run_id, key)}

    def log_epoch(self, metrics: Mapping[str, float], step: int) -> bool:
        """Log one epoch's metrics at ``step`` unless the run has it; True when nothing is left buffered."""
        if self.run_id is None:
            return True
        self._pending.setdefault(int(step), dict(metrics))
        return self.flush()

    def flush(self) -> bool:
        """Write the buffered epochs; on failure keep them and warn. True when the buffer is empty."""
        if self.run_id is None or not self._pending:
            return True
        from mlflow.entities import Metric

        try:
            if self._logged is None:
                self._logged = self._steps_in_run({k for m in self._pending.values() for k in m})
            for step in sorted(self._pending):
                if step not in self._logged:
                    now = int(time.time() * 1000)
                    batch = [Metric(k, float(v), now, step) for k, v in self._pending[step].items()]
                    for i in range(0, len(batch), 1000):  # MLflow caps a batch at 1000 metrics
                        self._get().log_batch(self.run_id, metrics=batch[i:i + 1000])
                    self._logged.add(step)
                del self._pending[step]
        except Exception as err:  # noqa: BLE001 (whatever the store raised, training goes on)
            log.warning("MLflow run %s: could not log epoch(s) %s to %s (%s: %s); kept, retried later",
                        self.run_id, sorted(self._pending), redact(self.uri), type(err).__name__, err)
            return False
        return True

    def log_history(self, history: list[Mapping[str, Any]]) -> bool:
        """Log every epoch of ``history`` (the final checkpoint's) that the run lacks; retry, then warn.

        Returns:
            True when the run has every epoch.
        """
        if self.run_id is None:
            return True
        self._logged = None  # read again: the controller's copy logged the epochs, not this one
        for row in history:
            self._pending.setdefault(int(row["epoch"]), curve_metrics(row))
        for delay in (*self.RETRIES, None):
            if self.flush():
                return True
            if delay is not None:
                time.sleep(delay)
        log.warning("MLflow run %s lacks epoch(s) %s: the store did not answer; the curves (plots/) have them",
                    self.run_id, sorted(self._pending))
        return False

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_client": None}


def log_child_run(parent_run_id: str, run_name: str, *, params: Mapping[str, Any],
                  history: list[Mapping[str, float]], tags: Mapping[str, str], failed: bool = False) -> str:
    """Record one finished piece of work (a sweep trial) as a child run of ``parent_run_id``.

    Written by the driver after the work ended, so the trial processes never
    write to the store at once (SQLite) and a trial stopped early is never left
    ``RUNNING``.

    Args:
        parent_run_id: The run it belongs to (the sweep's).
        run_name: Shown in the UI.
        params: Flat params (secret-looking keys are dropped).
        history: One mapping per step; its ``step`` key (else the row number) is the step.
        tags: Extra tags.
        failed: Mark the run FAILED instead of FINISHED.

    Returns:
        The child run's id.
    """
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    client = MlflowClient(tracking_uri())
    parent = client.get_run(parent_run_id)
    run = client.create_run(parent.info.experiment_id, run_name=run_name,
                            tags={**{k: str(v) for k, v in tags.items() if not is_secret(k)},
                                  "mlflow.parentRunId": parent_run_id})
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, int(row.get("step", i)))
               for i, row in enumerate(history) for k, v in row.items() if k != "step"]
    clean = [Param(k, str(v)) for k, v in params.items() if not is_secret(k)]
    # MLflow caps one batch at 1000 metrics and 100 params
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i:i + 1000])
    for i in range(0, len(clean), 100):
        client.log_batch(run_id, params=clean[i:i + 100])
    client.set_terminated(run_id, "FAILED" if failed else "FINISHED")
    return run_id


def log_artifacts(paths: Mapping[str, str | os.PathLike]) -> None:
    """Log files/folders into the active run: ``{artifact_dir: local_path}``."""
    import mlflow

    for artifact_dir, path in paths.items():
        path = Path(path)
        if path.is_dir():
            mlflow.log_artifacts(str(path), artifact_path=artifact_dir)
        elif path.exists():
            mlflow.log_artifact(str(path), artifact_path=artifact_dir)


def set_tags(tags: Mapping[str, Any]) -> None:
    """Tag the active run with what is known only once the stage has run (data hashes...)."""
    import mlflow

    mlflow.set_tags(loggable(tags))


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    import mlflow

    mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)


def download_artifacts(uri: str, dst: str | os.PathLike) -> Path:
    """Download ``uri`` (e.g. ``models:/NAME@ALIAS``, ``runs:/ID/path``) into ``dst``; return the local path.

    Uses the project's tracking URI (``MLFLOW_TRACKING_URI`` or the embedded
    store), which is also the registry's.

    Raises:
        FileNotFoundError: the store has no such model, alias, run or artifact.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    uri_store = tracking_uri()
    check_reachable(uri_store)
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst), tracking_uri=uri_store))
    except MlflowException as err:
        raise FileNotFoundError(f"{uri} not found in the MLflow store {uri_store}: {err.message}") from err
