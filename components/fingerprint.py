"""Which project files a module runs, and one hash of them: the code part of a run's identity.

A training run is identified by its code, its params and its data
(:func:`components.train.ray_trainer.stable_run_name`). The code part is
:func:`code_fingerprint`: the SHA-256 of every project file the stage module
imports, transitively (``import`` and ``from ... import`` statements anywhere
in a file, function bodies included, and the ``__init__.py`` of every package
on the way). Editing any of them, e.g. a loss in
``components/generative/losses.py``, gives the stage a new run name, so a
rerun trains from scratch instead of resuming the checkpoints of other code.

The same closure is what each DVC stage's ``deps`` must cover:
``tests/unit/test_dvc_deps.py`` checks ``dvc.yaml`` against
:func:`import_closure`, naming the stage and the missing file.

Only the project's own packages count (``components``, ``pipelines``);
installed libraries are pinned by ``constraints.txt``, not hashed here.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("components", "pipelines")


def _module_file(root: Path, module: str) -> Path | None:
    """``a.b`` → ``root/a/b.py`` or ``root/a/b/__init__.py``; None when neither exists."""
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(root: Path, path: Path) -> set[str]:
    """Project modules named by the import statements of ``path`` (relative imports resolved)."""
    parts = path.relative_to(root).with_suffix("").parts
    # the package relative imports start from: the module's own for an __init__.py
    package = list(parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            # `from pkg import mod` imports a module when `mod` is one
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if m.split(".")[0] in PACKAGES}


def import_closure(module: str, root: str | Path = PROJECT_ROOT) -> list[Path]:
    """Every project file that importing ``module`` runs, sorted, as paths relative to ``root``.

    Args:
        module: A dotted module name, e.g. ``pipelines.train_vae``.
        root: The folder that holds ``components/`` and ``pipelines/``.

    Raises:
        FileNotFoundError: ``module`` is not a file under ``root``.
    """
    root = Path(root).resolve()
    if _module_file(root, module) is None:
        raise FileNotFoundError(f"no module {module} under {root}")
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        # importing a.b.c runs a/__init__.py and a/b/__init__.py first
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        path = _module_file(root, name)
        if path is None or path in seen:
            continue
        seen.add(path)
        todo.extend(_imported_modules(root, path))
    return sorted(p.relative_to(root) for p in seen)


def _outside_module(module: str, root: Path) -> tuple[Path, list[Path]]:
    """A module outside the project (a plug-in family, a test's toy family): its file, and the
    closure of the project modules it imports (absolute imports only)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise FileNotFoundError(f"no module {module} under {root}, nor an importable source file")
    path = Path(spec.origin)
    imported = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            imported.add(node.module)
            imported.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from pkg import mod`
    closure = {rel for name in imported if name.split(".")[0] in PACKAGES and _module_file(root, name)
               for rel in import_closure(name, root)}
    return path, sorted(closure)


@functools.cache
def _fingerprint(module: str, root: Path) -> str:
    digest = hashlib.sha256()
    if _module_file(root, module) is None:
        path, closure = _outside_module(module, root)
        digest.update(module.encode() + b"\0" + path.read_bytes() + b"\0")
    else:
        closure = import_closure(module, root)
    for rel in closure:
        digest.update(rel.as_posix().encode() + b"\0")
        digest.update((root / rel).read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def code_fingerprint(module: str, root: str | Path = PROJECT_ROOT) -> str:
    """16 hex digits of SHA-256 over the path and bytes of every file of :func:`import_closure`.

    A module outside the project (a model family living in another package)
    counts with its own file and the closure of the project modules it imports.

    Cached per process: a stage hashes its code once.
    """
    return _fingerprint(module, Path(root).resolve())


__all__ = ["PROJECT_ROOT", "import_closure", "code_fingerprint"]
