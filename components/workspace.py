"""Where the project's shared state lives, whichever way a stage was started.

``dvc repro`` runs a stage in the repository; ``dvc exp run --temp`` and
``dvc exp run --queue`` + ``dvc queue start`` run it in a throwaway copy under
``<repo>/.dvc/tmp/exps/``, which DVC deletes afterwards. The MLflow store
(``mlflow.db``, ``mlartifacts/``) and the Ray Train checkpoints
(``ray_results/``) must outlive that copy, so they are kept at the root of the
*project* repository, found by :func:`project_root`:

1. ``DVC_ROOT``: DVC sets it for every stage it runs, to the repository that
   was asked to run it (for a temporary or queued experiment: the parent
   repository, not the copy);
2. else the working directory, when it is inside ``<repo>/.dvc/tmp/exps/``:
   that ``<repo>``;
3. else the nearest folder up from the working directory that holds a
   ``.dvc`` folder (a stage run by hand from a subfolder);
4. else the working directory itself (a stage run outside any DVC project,
   as the tests do in a scratch folder).

:func:`experiment_name` is the DVC experiment a stage runs for (``DVC_EXP_NAME``,
set by ``dvc exp run``), or None under plain ``dvc repro``.
"""

from __future__ import annotations

import os
from pathlib import Path

EXPERIMENT_TMP = (".dvc", "tmp", "exps")


def project_root(cwd: str | os.PathLike | None = None) -> Path:
    """The repository whose ``mlflow.db`` and ``ray_results/`` this stage uses (see the module doc)."""
    env = os.environ.get("DVC_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(cwd or os.getcwd()).resolve()
    parts = here.parts
    for i in range(len(parts) - len(EXPERIMENT_TMP) + 1):
        if parts[i:i + len(EXPERIMENT_TMP)] == EXPERIMENT_TMP:
            return Path(*parts[:i])
    for folder in (here, *here.parents):
        if (folder / ".dvc").is_dir():
            return folder
    return here


def resolve(path: str | os.PathLike, cwd: str | os.PathLike | None = None) -> str:
    """``path`` made absolute against :func:`project_root`; a URI (``s3://...``) or absolute path as it is."""
    path = str(path)
    if "://" in path or os.path.isabs(path):
        return path
    return str(project_root(cwd) / path)


def experiment_name() -> str | None:
    """The DVC experiment being run (``dvc exp run``), or None."""
    return os.environ.get("DVC_EXP_NAME") or None


__all__ = ["project_root", "resolve", "experiment_name"]
