"""A run's code identity: the files a module imports, and their hash."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.fingerprint import code_fingerprint, import_closure
from components.generative.fit import train_loop_per_worker_vae
from components.train.ray_trainer import stable_run_name

ROOT = Path(__file__).resolve().parents[2]


def _project(tmp_path: Path) -> Path:
    files = {
        "components/__init__.py": "",
        "components/a/__init__.py": "",
        "components/a/loss.py": "K = 0.5\n",
        "components/a/fit.py": "from components.a.loss import K\n\ndef run():\n    from .lazy import f\n",
        "components/a/lazy.py": "def f(): ...\n",
        "components/a/unused.py": "X = 1\n",
        "pipelines/__init__.py": "",
        "pipelines/stage.py": "import json\nfrom components.a import fit\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return tmp_path


def test_closure_follows_imports_in_function_bodies_relative_imports_and_packages(tmp_path):
    root = _project(tmp_path)
    assert [str(p) for p in import_closure("pipelines.stage", root)] == [
        "components/__init__.py", "components/a/__init__.py", "components/a/fit.py", "components/a/lazy.py",
        "components/a/loss.py", "pipelines/__init__.py", "pipelines/stage.py"]


def test_fingerprint_changes_with_an_imported_file_only(tmp_path):
    root = _project(tmp_path)
    before = code_fingerprint("pipelines.stage", root)
    (root / "components/a/unused.py").write_text("X = 2\n")
    from components import fingerprint

    fingerprint._fingerprint.cache_clear()
    assert code_fingerprint("pipelines.stage", root) == before
    (root / "components/a/loss.py").write_text("K = 5.0\n")  # the example: a KL weight
    fingerprint._fingerprint.cache_clear()
    assert code_fingerprint("pipelines.stage", root) != before


def test_unknown_module_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no module pipelines.nope"):
        import_closure("pipelines.nope", _project(tmp_path))


def test_every_training_loop_is_hashed_with_the_code_it_runs():
    closure = {str(p) for p in import_closure(train_loop_per_worker_vae.__module__, ROOT)}
    assert {"components/generative/losses.py", "components/generative/vae.py",
            "components/train/session.py"} <= closure
    assert not any(p.startswith("components/captioning/") for p in closure)  # another family's code


def test_run_name_includes_the_loops_code(monkeypatch):
    from components.train import ray_trainer

    name = stable_run_name("vae", train_loop_per_worker_vae, {"lr": 1})
    assert name == stable_run_name("vae", train_loop_per_worker_vae, {"lr": 1})
    assert name != stable_run_name("vae", train_loop_per_worker_vae, {"lr": 2})
    monkeypatch.setattr(ray_trainer, "code_fingerprint", lambda module: "other code")
    assert name != stable_run_name("vae", train_loop_per_worker_vae, {"lr": 1})


def test_a_module_outside_the_project_counts_with_its_file_and_the_project_code_it_imports(tmp_path, monkeypatch):
    """A model family living outside components/ (a plug-in, a test's toy family) still has a code identity."""
    root = _project(tmp_path / "project")
    plugin = tmp_path / "plugins" / "plugin_family.py"
    plugin.parent.mkdir()
    plugin.write_text("from components.a import fit\n\ndef loop(config): ...\n")
    monkeypatch.syspath_prepend(str(plugin.parent))
    first = code_fingerprint("plugin_family", root)
    from components import fingerprint

    fingerprint._fingerprint.cache_clear()
    (root / "components/a/loss.py").write_text("K = 5.0\n")  # project code it imports, transitively
    assert code_fingerprint("plugin_family", root) != first
    fingerprint._fingerprint.cache_clear()
    second = code_fingerprint("plugin_family", root)
    plugin.write_text("from components.a import fit\n\ndef loop(config): return 1\n")  # its own file
    fingerprint._fingerprint.cache_clear()
    assert code_fingerprint("plugin_family", root) != second
    with pytest.raises(FileNotFoundError, match="no module nowhere_family"):
        code_fingerprint("nowhere_family", root)
