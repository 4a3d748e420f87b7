"""The training-loop side of Ray Train, behind a small interface.

A model family's loop (``fit_captioner``, ``fit_vae``, ``fit_gan``) takes a
:class:`Session` and never imports Ray itself. Under ``TorchTrainer`` it gets a
:class:`RaySession` (rank, device, ``ray.train.report`` with checkpoints,
``ray.train.get_checkpoint`` to resume); in a benchmark or a unit test it gets a
:class:`LocalSession`, which runs the very same loop in this process. This is
how the benchmarks compare "under Ray Train" with "the same loop without Ray".

Checkpoints are one ``state.pt`` (model/optimizer state dicts, epoch, history)
loaded with ``weights_only=True``. Only rank 0 writes files; every rank calls
:meth:`Session.report` once per epoch (Ray Train's report is a barrier).
"""

from __future__ import annotations

import abc
import contextlib
import io
import logging
import os
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

STATE_FILE = "state.pt"


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from several integers (seed, rank, epoch, stream...).

    Loops reseed every random stream at the start of each epoch from
    ``(seed, rank, epoch, stream)``, so an epoch's randomness depends on
    nothing but those numbers: a run resumed at an epoch boundary draws the
    same shuffles, dropout masks and noise as an uninterrupted one, and no
    generator state needs to travel in the checkpoint.
    """
    return int(np.random.SeedSequence([abs(p) for p in parts]).generate_state(2, np.uint64)[0] >> 1)


def _save_state(folder: str, state: dict[str, Any]) -> None:
    torch.save(state, os.path.join(folder, STATE_FILE))


def _load_state(folder: str) -> dict[str, Any]:
    return torch.load(os.path.join(folder, STATE_FILE), map_location="cpu", weights_only=True)


class Session(abc.ABC):
    """What a training loop needs from whoever runs it."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_chief(self) -> bool:
        """Rank 0: the only worker that logs and writes files."""
        return self.rank == 0

    @property
    @abc.abstractmethod
    def device(self) -> torch.device: ...

    @abc.abstractmethod
    def restore(self) -> dict[str, Any] | None:
        """The state of the last reported checkpoint, or None on a fresh start."""

    @abc.abstractmethod
    def report(self, metrics: dict[str, float], state: dict[str, Any] | None, *, epoch: int) -> None:
        """Report one epoch's metrics; ``state`` (rank 0's) becomes the checkpoint."""

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move to the device (and wrap in DDP when distributed)."""
        return model.to(self.device)

    def end_epoch(self, state: dict[str, Any], metrics: dict[str, float], *,
                  checkpoint: Callable[[], dict[str, Any]]) -> None:
        """Close an epoch the same way in every loop: record it, checkpoint on rank 0, report.

        Appends ``metrics`` to ``state["history"]`` and sets ``state["epoch"]``
        before ``checkpoint()`` builds the checkpoint, so the checkpoint holds
        the finished epoch and a restart resumes after it. ``checkpoint`` runs
        on rank 0 only (the other ranks' checkpoints would be thrown away);
        every rank reports, since Ray Train's report is a barrier. The loop
        logs nothing itself: the driver side logs the reported epochs to
        MLflow once their checkpoint is persisted
        (:mod:`components.train.ray_trainer`), so a crash never logs an epoch twice.

        Args:
            state: The loop's resumable state; needs ``history`` and ``epoch``.
            metrics: This epoch's metrics, ``metrics["epoch"]`` included.
            checkpoint: Builds rank 0's checkpoint from ``state``.
        """
        epoch = int(metrics["epoch"])
        state["history"].append(metrics)
        state["epoch"] = epoch
        snapshot = checkpoint() if self.is_chief else None
        self.report(metrics, snapshot, epoch=epoch)

    def sampler(self, dataset: Any, *, shuffle: bool, seed: int) -> torch.utils.data.Sampler | None:
        """A DistributedSampler when distributed, else None (use ``shuffle``)."""
        if self.world_size == 1:
            return None
        return torch.utils.data.DistributedSampler(
            dataset, num_replicas=self.world_size, rank=self.rank, shuffle=shuffle, seed=seed
        )


class LocalSession(Session):
    """Run a loop in this process, without Ray. Keeps checkpoints in memory.

    A checkpoint goes through ``torch.save`` / ``torch.load(weights_only=True)``
    as on disk, so it never aliases the live weights and a resume from it is
    what a resume from a Ray checkpoint would be.

    ``on_report`` receives ``(epoch, metrics)``: benchmarks time with it, tests
    inspect it.
    """

    def __init__(self, *, device: str | torch.device = "cpu",
                 on_report: Callable[[int, dict[str, float]], None] | None = None,
                 initial_state: dict[str, Any] | None = None):
        self._device = torch.device(device)
        self._on_report = on_report
        self.last_state = initial_state
        self.history: list[dict[str, float]] = []

    @property
    def device(self) -> torch.device:
        return self._device

    def restore(self) -> dict[str, Any] | None:
        return self.last_state

    def report(self, metrics: dict[str, float], state: dict[str, Any] | None, *, epoch: int) -> None:
        self.history.append({"epoch": epoch, **metrics})
        if state is not None:
            buffer = io.BytesIO()
            torch.save(state, buffer)
            buffer.seek(0)
            self.last_state = torch.load(buffer, map_location="cpu", weights_only=True)
        if self._on_report is not None:
            self._on_report(epoch, metrics)


class RaySession(Session):
    """Inside ``TorchTrainer``'s ``train_loop_per_worker``."""

    def __init__(self) -> None:
        import ray.train
        from ray.train.v2._internal.execution import context as train_context

        # Ray Train's "Reporting training result N: TrainingReport(...)" is an INFO line from a
        # logger named after its file (not under `ray.train`, so RunConfig's LoggingConfig does
        # not reach it) that propagates to the worker's console: one dump per epoch. Quiet it here.
        logging.getLogger(train_context.__file__).setLevel(logging.WARNING)
        ctx = ray.train.get_context()
        self.rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()

    @property
    def device(self) -> torch.device:
        import ray.train.torch

        return ray.train.torch.get_device()

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        import ray.train.torch

        return ray.train.torch.prepare_model(model)

    def restore(self) -> dict[str, Any] | None:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as folder:
            return _load_state(folder)

    def report(self, metrics: dict[str, float], state: dict[str, Any] | None, *, epoch: int) -> None:
        import ray.train

        name = f"epoch-{epoch:04d}"
        with tempfile.TemporaryDirectory() as folder:
            checkpoint = None
            if self.is_chief and state is not None:
                _save_state(folder, state)
                checkpoint = ray.train.Checkpoint.from_directory(folder)
            ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside DDP / DataParallel (``.module``) and ``torch.compile`` (``._orig_mod``)."""
    while True:
        if isinstance(model, torch.nn.parallel.DistributedDataParallel | torch.nn.DataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` on ``device`` at ``dtype``; a no-op for None (every loop's one autocast)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class InjectedFailure(RuntimeError):
    """Raised on purpose by the failure-injection param (tests of fault tolerance)."""


def maybe_inject_failure(fail_at_epoch: int, epoch: int, session: Session, flag_dir: str) -> None:
    """Fail once, on rank ``world_size - 1``, at the start of ``fail_at_epoch`` (-1: never).

    A flag file in ``flag_dir`` (the run's storage folder) makes it fail only
    the first time, so the restarted worker group goes on.
    """
    if fail_at_epoch < 0 or epoch != fail_at_epoch or session.rank != session.world_size - 1:
        return
    flag = os.path.join(flag_dir, f"injected-failure-epoch-{epoch}")
    if os.path.exists(flag):
        return
    os.makedirs(flag_dir, exist_ok=True)
    open(flag, "w").close()
    raise InjectedFailure(f"injected failure at epoch {epoch} on rank {session.rank}")
