"""Atomic outputs: a killed stage never leaves a half-written file or folder.

Everything a stage declares as an output is written to a temporary sibling
(``<name>.tmp-<pid>``) and renamed into place only when complete. ``rename``
within one filesystem is atomic on POSIX, so DVC never hashes a partial output.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def _tmp_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def clean_stale_tmp(path: str | os.PathLike) -> None:
    """Remove temporaries left beside ``path`` by a killed earlier run."""
    path = Path(path)
    if path.parent.exists():
        for stale in path.parent.glob(f".{path.name}.tmp-*"):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder that replaces ``path`` when the block succeeds.

    On an exception the temporary folder is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_tmp(path)
    tmp = _tmp_sibling(path)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w") -> Iterator[Any]:
    """Open a temporary file that replaces ``path`` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as pretty, key-sorted JSON, atomically."""
    with atomic_file(path) as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def find_json_dir(root: str | os.PathLike, filename: str, accept: Callable[[dict], bool]) -> Path | None:
    """The shallowest folder under ``root`` (itself included) whose ``filename`` is a JSON object ``accept`` takes.

    Finds a model folder inside downloaded artifacts (e.g. an MLflow model's),
    whatever the layout around it; None when there is none.
    """
    for found in sorted(Path(root).rglob(filename), key=lambda p: len(p.parts)):
        try:
            meta = json.loads(found.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and accept(meta):
            return found.parent
    return None


def short_sha256(path: str | os.PathLike, length: int = 16) -> str:
    """The first ``length`` hex digits of a file's SHA-256: a data version for tags and run names."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:length]
