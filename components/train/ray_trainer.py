"""Driver side of Ray Train: one ``TorchTrainer`` factory for every model family.

The train stages and the Tune sweep both build their trainer here, so scaling,
storage, failure handling and run naming are set up once.

Run names are a run's identity: ``<family>-<hash of code, params and data>``
(:func:`stable_run_name`; the code is :func:`components.fingerprint.code_fingerprint`
of the module that holds the training loop). A rerun of an identical run
(after a kill, or ``dvc repro`` after a crash) finds the checkpoints of the
earlier attempt under ``storage_path/<name>`` and resumes from the last one; a
change in the loop's code, a param or the data gives a new name and a fresh
start. A relative ``storage_path`` is taken from the project's root
(:func:`components.workspace.resolve`), so the temporary workspaces of
``dvc exp run --temp`` / ``--queue`` keep their checkpoints in the project's
``ray_results/`` (``capsynth runs`` lists and prunes them).

Metrics reach MLflow from the driver side, not from the workers: a
:class:`~components.tracking.RunLogger` handed to :func:`make_trainer` logs
each epoch once Ray Train has persisted that epoch's checkpoint (a Ray Train
``UserCallback`` on the controller), and :func:`fit` finally logs whatever
epoch of the checkpoint's history MLflow still lacks. So a worker or node
killed mid-epoch, or a driver killed and rerun, leaves every epoch in the
MLflow history exactly once, with the values of the curves.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from components import workspace
from components.fingerprint import code_fingerprint
from components.train.config import ScalingParams
from components.train.session import STATE_FILE

log = logging.getLogger(__name__)

# Shared checkpoint storage of a cluster (``s3://bucket/ray_results``, an NFS path); it
# replaces the stages' ``--storage`` folder, which must be shared on more than one node.
STORAGE_ENV = "CAPSYNTH_RAY_STORAGE"


def stable_run_name(family: str, loop: Callable[..., Any], *parts: Any) -> str:
    """``family-<12 hex>``: the run's identity, from its code and a JSON of ``parts`` (configs, data hashes).

    Args:
        family: Prefix of the name (``captioner``, ``vae``, ...).
        loop: The ``train_loop_per_worker``: the code fingerprint of its
            module (every project file it imports) is part of the name.
        parts: Params and data versions.
    """
    blob = json.dumps([code_fingerprint(loop.__module__), *parts], sort_keys=True, default=str).encode()
    return f"{family}-{hashlib.sha256(blob).hexdigest()[:12]}"


@dataclasses.dataclass(frozen=True)
class EpochProgress:
    """The console's one line per epoch: ``train_vae  epoch  3/30  val_elbo -1.235e+04 ... (8.9 s)``.

    Attributes:
        stage: The stage's name, first on the line.
        epochs: The planned number of epochs (None: not known).
        keys: The report's metrics shown, in order (missing ones are left out).
    """

    stage: str
    epochs: int | None
    keys: tuple[str, ...]

    def line(self, metrics: Mapping[str, Any], seconds: float | None = None) -> str:
        epoch = int(metrics["epoch"]) + 1  # reports count epochs from 0
        of = f"/{self.epochs}" if self.epochs else ""
        shown = [f"{k} {metrics[k]:.4g}" for k in self.keys if isinstance(metrics.get(k), (int, float))]
        took = f"  ({seconds:.1f} s)" if seconds is not None else ""
        return f"{self.stage}  epoch {epoch:>3}{of}  " + "  ".join(shown) + took


def _epoch_callback(logger: Any, progress: EpochProgress | None):
    """A Ray Train ``UserCallback`` for rank 0's report of each epoch: MLflow, and the progress line.

    It runs on the Train controller after the report's checkpoint is
    persisted; ``logger.log_epoch`` never raises (an unreachable store costs
    a warning and a retry at the next epoch, not a training restart). The
    progress line is printed there and reaches the console through Ray's log
    forwarding, prefixed ``(TrainController pid=...)``.
    """
    from ray.train import UserCallback

    from components.tracking import curve_metrics

    class EpochCallback(UserCallback):
        def __init__(self):
            self.last: float | None = None

        def after_report(self, run_context, metrics, checkpoint) -> None:
            if not metrics or "epoch" not in metrics[0]:
                return
            if logger is not None:
                logger.log_epoch(curve_metrics(metrics[0]), step=int(metrics[0]["epoch"]))
            if progress is not None:
                now = time.monotonic()
                print(progress.line(metrics[0], None if self.last is None else now - self.last), flush=True)
                self.last = now

    return EpochCallback()


def cluster_has_gpus() -> bool:
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0


def make_trainer(
    train_loop_per_worker: Callable[[dict], None],
    loop_config: dict[str, Any],
    *,
    scaling: ScalingParams,
    cpus_per_worker: int = 1,
    run_name: str,
    storage_path: str,
    num_to_keep: int = 2,
    callbacks: Sequence[Any] = (),
    logger: Any = None,
    progress: EpochProgress | None = None,
):
    """Build the ``TorchTrainer`` for one training run.

    Args:
        train_loop_per_worker: The family's ``train_loop_per_worker(config)``.
        loop_config: Plain, picklable config handed to every worker.
        scaling: The stage's ``scaling`` params: workers, GPU use (None: when
            the cluster has GPUs), restarts on failure.
        cpus_per_worker: CPUs each worker reserves (the stage's ``train.threads_per_worker``).
        run_name: Stable name (see :func:`stable_run_name`); same name resumes.
        storage_path: Where checkpoints persist (local folder, NFS or S3 URI);
            ``CAPSYNTH_RAY_STORAGE`` overrides it; a relative path is taken
            from the project root (:func:`components.workspace.resolve`).
        num_to_keep: Checkpoints kept (the latest ones).
        callbacks: Ray Train callbacks, e.g. Tune's ``TuneReportCallback`` when
            the trainer runs inside a sweep trial.
        logger: A :class:`~components.tracking.RunLogger` that gets every
            epoch once its checkpoint is persisted; pass the same one to
            :func:`fit`. None: no MLflow.
        progress: Print one line per epoch (:class:`EpochProgress`). None: silent.

    Ray Train's own INFO lines (a ``TrainingReport(...)`` dump per report, the
    checkpoint paths, worker-group set-up) are kept off the console
    (``LoggingConfig(log_level="WARNING")``); Ray still writes them, at every
    level, to its session's ``logs/train/`` files.

    Returns:
        A ``ray.train.torch.TorchTrainer``; call ``fit`` via :func:`fit`.
    """
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    use_gpu = cluster_has_gpus() if scaling.use_gpu is None else scaling.use_gpu
    storage_path = workspace.resolve(os.environ.get(STORAGE_ENV) or storage_path)
    if logger is not None or progress is not None:
        callbacks = [*callbacks, _epoch_callback(logger, progress)]
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={**loop_config, "storage_dir": os.path.join(storage_path, run_name)},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=scaling.num_workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": cpus_per_worker},
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage_path,
            failure_config=FailureConfig(max_failures=scaling.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=num_to_keep),
            callbacks=list(callbacks),
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )


class TrainingFailed(RuntimeError):
    """Training stopped for good; the message carries the workers' root error."""


def fit(trainer, *, logger: Any = None) -> dict[str, Any]:
    """Run ``trainer`` and return the state of its last checkpoint.

    With ``logger`` (the one given to :func:`make_trainer`), every epoch of
    the final state's history that the MLflow run lacks is logged now: the
    epochs of an earlier attempt (a killed driver), or those a store outage
    left unlogged. The checkpoint's history is the truth the curves show too.

    Raises:
        TrainingFailed: when the run fails after its restarts, with the
            first line of the worker's error (e.g. a non-finite loss).
    """
    import ray.train

    try:
        result = trainer.fit()
    except ray.train.TrainingFailedError as err:
        raise TrainingFailed(_root_message(err)) from err
    if result.error is not None:
        raise TrainingFailed(_root_message(result.error))
    if result.checkpoint is None:
        raise TrainingFailed("training finished without reporting a checkpoint")
    with result.checkpoint.as_directory() as folder:
        state = torch.load(os.path.join(folder, STATE_FILE), map_location="cpu", weights_only=True)
    if logger is not None:
        logger.log_history(state["history"])
    return state


def _root_message(err: BaseException) -> str:
    """The innermost worker error line, not Ray's wrapper text."""
    text = str(err)
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line and ("Error:" in line or "Exception:" in line) and not line.startswith("ray."):
            return line
    return text.splitlines()[0] if text else type(err).__name__
