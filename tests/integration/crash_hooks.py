"""Real crashes for the fault tests: a training worker SIGKILLs itself once, at a chosen step.

Not an exception: ``os.kill(os.getpid(), SIGKILL)`` ends the ``RayTrainWorker``
process at once (no ``finally``, no Python cleanup), as the OOM killer or a
pre-empted machine would. A flag file makes it happen only the first time, so
the restarted worker group runs on. Imported as ``crash_hooks`` by the tests;
:func:`send_by_value` lets Ray workers unpickle the hooks without this folder
on their path.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from pathlib import Path


def _kill_once(flag: Path) -> None:
    if flag.exists():
        return
    flag.write_text(str(os.getpid()))
    os.kill(os.getpid(), signal.SIGKILL)


def _rank() -> int:
    import ray.train

    return ray.train.get_context().get_world_rank()


def _gan_hook(flag: str, at_step: int, G, D, step: int) -> None:
    if step == at_step and _rank() == 0:
        _kill_once(Path(flag))


def _captioner_hook(flag: str, at_epoch: int, model, epoch: int, step: int) -> None:
    if epoch == at_epoch and step == 0 and _rank() == 0:
        _kill_once(Path(flag))


def gan_sigkill_at(flag: Path, step: int):
    """GAN ``on_step`` hook: rank 0's worker SIGKILLs itself after global step ``step``."""
    return functools.partial(_gan_hook, str(flag), step)


def captioner_sigkill_at(flag: Path, epoch: int):
    """Captioner ``on_step`` hook: rank 0's worker SIGKILLs itself after the first step of ``epoch``."""
    return functools.partial(_captioner_hook, str(flag), epoch)


def send_by_value() -> None:
    """Pickle these hooks by value, so Ray workers get their code."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
