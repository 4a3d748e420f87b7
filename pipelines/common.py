"""What every stage entry point shares: logging and clean failure messages."""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from components.config import ConfigError
from components.data.images import BadImageError
from components.data.schema import DatasetFormatError
from components.serving import BadInput
from components.tracking import TrackingUnavailable

# Errors caused by the user's input or params: one clear line, no traceback.
USER_ERRORS = (ConfigError, DatasetFormatError, BadImageError, BadInput, FileNotFoundError)


class StageFailed(RuntimeError):
    """The stage stopped for a reason its message explains in full (e.g. a diverged
    training run, with where its last good checkpoint is): one line, exit code 1."""


REGISTRY_PREFIX = "models:/"
# commands whose stdout is their answer (a caption, a file written): no start / done lines
QUIET_COMMANDS = frozenset({"caption", "sample", "imagine"})


@contextlib.contextmanager
def local_model(model: str, command: str) -> Iterator[Path]:
    """``model`` as a local folder for the block: a folder as it is, or a registry URI
    (``models:/NAME@ALIAS``) whose artifacts are downloaded to a temporary folder, removed after."""
    if not model.startswith(REGISTRY_PREFIX):
        yield Path(model)
        return
    from components import tracking

    with tempfile.TemporaryDirectory(prefix=f"capsynth-{command}-") as tmp:
        yield Path(tracking.download_artifacts(model, tmp))


def stage_main(name: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Wrap a stage's ``main``: set up logging, a start and an end line, input errors to exit code 2."""

    def wrap(fn: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(fn)
        def main(*args, **kwargs) -> None:
            logging.basicConfig(level=logging.INFO, format="%(levelname)s capsynth.%(name)s: %(message)s")
            start, announce = time.monotonic(), name not in QUIET_COMMANDS
            if announce:
                print(f"capsynth {name}: started", flush=True)
            try:
                fn(*args, **kwargs)
                if announce:
                    print(f"capsynth {name}: done in {time.monotonic() - start:.0f} s", flush=True)
            except USER_ERRORS as err:
                print(f"capsynth {name}: error: {err}", file=sys.stderr)
                sys.exit(2)
            except (StageFailed, TrackingUnavailable) as err:
                print(f"capsynth {name}: failed: {err}", file=sys.stderr)
                sys.exit(1)

        return main

    return wrap
