"""Every DVC stage's ``deps`` cover every project file its module imports, transitively.

A stage whose code imports a file that ``dvc.yaml`` does not list would not
rerun when that file changes: ``dvc repro`` would keep a result of old code.
The closure is :func:`components.fingerprint.import_closure`, the same one
that names a training run's code identity. The generic train stage
(``python -m pipelines.train --family NAME``) imports its family's module by
name (:mod:`components.families`, ``families.get``), so that module's closure
counts too; a stage that loads specs with no ``--family`` (``evaluate``,
``register``) counts every family's spec and evaluation modules.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from components import families
from components.fingerprint import import_closure

ROOT = Path(__file__).resolve().parents[2]
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _module(cmd: str) -> str | None:
    words = cmd.split()
    return words[words.index("-m") + 1] if "-m" in words else None


def _closure(cmd: str) -> set[Path]:
    """The project files a stage's command runs: its module's closure and, when it uses the family
    registry, that of its ``--family`` or, without one, of every registered family."""
    words = cmd.split()
    closure = set(import_closure(_module(cmd), ROOT))
    if any(_loads_specs(ROOT / p) for p in closure):  # it imports family specs by name
        if "--family" in words:  # a training stage: the family's spec (not its evaluation)
            modules = [families.module_of(words[words.index("--family") + 1])]
        else:
            modules = [m for name in families.names() for m in families.modules_of(name)]
        for module in modules:
            closure |= set(import_closure(module, ROOT))
    return closure


def _loads_specs(path: Path) -> bool:
    """Whether a file imports family specs through the registry (which no import statement shows)."""
    return path.suffix == ".py" and "families.get(" in path.read_text()


def _covered(path: Path, deps: list[str]) -> bool:
    return any(path == Path(d) or Path(d) in path.parents for d in deps)


def _deps(stage: dict) -> list[str]:
    return [d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", [])]


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_deps_cover_every_imported_project_file(name):
    stage = STAGES[name]
    module = _module(stage["cmd"])
    assert module and module.startswith("pipelines."), f"{name}: cmd is not `python -m pipelines.<stage>`"
    missing = [str(p) for p in sorted(_closure(stage["cmd"])) if not _covered(p, _deps(stage))]
    assert not missing, (f"dvc.yaml stage '{name}' imports files its deps do not list (a change there "
                         f"would not rerun it): add {', '.join(missing)}")


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_code_deps_exist(name):
    """A dep on a project path that does not exist is a typo (the real file is then not covered)."""
    code = [d for d in _deps(STAGES[name]) if d.split("/")[0] in ("components", "pipelines")]
    assert all((ROOT / d).exists() for d in code), [d for d in code if not (ROOT / d).exists()]


def test_the_check_sees_a_missing_dep():
    """The check itself: train_vae without components/generative would miss its losses."""
    deps = [d for d in _deps(STAGES["train_vae"]) if d != "components/generative"]
    assert not _covered(Path("components/generative/losses.py"), deps)
    assert Path("components/generative/losses.py") in _closure(STAGES["train_vae"]["cmd"])
