"""Driver side of Ray Train: one ``TorchTrainer`` factory for every model family.

The train stages and the Tune sweep both build their trainer here, so scaling,
storage, failure handling and run naming are set up once.

Run names are stable: ``<family>-<hash of the loop config and data>``. A rerun
of the same config (after a kill, or ``dvc repro`` after a crash) finds the
checkpoints of the earlier attempt under ``storage_path/<name>`` and resumes
from the last one; a changed param gives a new name and a fresh start.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch

from components.train.session import STATE_FILE

log = logging.getLogger(__name__)

# Shared checkpoint storage of a cluster (``s3://bucket/ray_results``, an NFS path); it
# replaces the stages' ``--storage`` folder, which must be shared on more than one node.
STORAGE_ENV = "CAPSYNTH_RAY_STORAGE"


@dataclasses.dataclass(frozen=True)
class ScalingSpec:
    """How many workers, on what. ``use_gpu=None`` uses GPUs when the cluster has them."""

    num_workers: int = 1
    cpus_per_worker: int = 1
    use_gpu: bool | None = None
    max_failures: int = 2

    @classmethod
    def from_params(cls, scaling: Any, threads_per_worker: int) -> ScalingSpec:
        """From a stage's ``scaling`` params group and its ``train.threads_per_worker``."""
        return cls(num_workers=scaling.num_workers, cpus_per_worker=threads_per_worker,
                   use_gpu=scaling.use_gpu, max_failures=scaling.max_failures)


def stable_run_name(family: str, *parts: Any) -> str:
    """``family-<12 hex>`` from a JSON of ``parts`` (configs, data hashes)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return f"{family}-{hashlib.sha256(blob).hexdigest()[:12]}"


def cluster_has_gpus() -> bool:
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0


def make_trainer(
    train_loop_per_worker: Callable[[dict], None],
    loop_config: dict[str, Any],
    *,
    scaling: ScalingSpec,
    run_name: str,
    storage_path: str,
    num_to_keep: int = 2,
    callbacks: Sequence[Any] = (),
):
    """Build the ``TorchTrainer`` for one training run.

    Args:
        train_loop_per_worker: The family's ``train_loop_per_worker(config)``.
        loop_config: Plain, picklable config handed to every worker.
        scaling: Workers, CPUs per worker, GPU use, restarts on failure.
        run_name: Stable name (see :func:`stable_run_name`); same name resumes.
        storage_path: Where checkpoints persist (local folder, NFS or S3 URI);
            ``CAPSYNTH_RAY_STORAGE`` overrides it.
        num_to_keep: Checkpoints kept (the latest ones).
        callbacks: Ray Train callbacks, e.g. Tune's ``TuneReportCallback`` when
            the trainer runs inside a sweep trial.

    Returns:
        A ``ray.train.torch.TorchTrainer``; call ``fit`` via :func:`fit`.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    use_gpu = cluster_has_gpus() if scaling.use_gpu is None else scaling.use_gpu
    storage_path = os.environ.get(STORAGE_ENV) or storage_path
    if "://" not in storage_path:
        storage_path = os.path.abspath(storage_path)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={**loop_config, "storage_dir": os.path.join(storage_path, run_name)},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=scaling.num_workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": scaling.cpus_per_worker},
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage_path,
            failure_config=FailureConfig(max_failures=scaling.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=num_to_keep),
            callbacks=list(callbacks),
        ),
    )


class TrainingFailed(RuntimeError):
    """Training stopped for good; the message carries the workers' root error."""


def fit(trainer) -> dict[str, Any]:
    """Run ``trainer`` and return the state of its last checkpoint.

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
        return torch.load(os.path.join(folder, STATE_FILE), map_location="cpu", weights_only=True)


def _root_message(err: BaseException) -> str:
    """The innermost worker error line, not Ray's wrapper text."""
    text = str(err)
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line and ("Error:" in line or "Exception:" in line) and not line.startswith("ray."):
            return line
    return text.splitlines()[0] if text else type(err).__name__
