"""The project root every way of running resolves to (the MLflow store and ray_results/ live there)."""

from __future__ import annotations

from pathlib import Path

from components import workspace


def test_dvc_root_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "repo"))
    assert workspace.project_root(tmp_path / "elsewhere") == (tmp_path / "repo").resolve()


def test_a_temporary_experiment_workspace_resolves_to_its_parent_repo(tmp_path, monkeypatch):
    monkeypatch.delenv("DVC_ROOT", raising=False)
    temp = tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "tmpab12" / "sub"
    temp.mkdir(parents=True)
    (temp.parent / ".dvc").mkdir()  # the copy is a DVC repo of its own
    assert workspace.project_root(temp) == (tmp_path / "repo").resolve()


def test_nearest_dvc_repo_up_from_the_working_directory_else_the_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("DVC_ROOT", raising=False)
    (tmp_path / "repo" / ".dvc").mkdir(parents=True)
    (tmp_path / "repo" / "a" / "b").mkdir(parents=True)
    assert workspace.project_root(tmp_path / "repo" / "a" / "b") == (tmp_path / "repo").resolve()
    (tmp_path / "plain").mkdir()
    assert workspace.project_root(tmp_path / "plain") == (tmp_path / "plain").resolve()


def test_resolve_keeps_uris_and_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    assert workspace.resolve("ray_results") == str(tmp_path.resolve() / "ray_results")
    assert workspace.resolve("/abs/x") == "/abs/x"
    assert workspace.resolve("s3://bucket/x") == "s3://bucket/x"


def test_experiment_name(monkeypatch):
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    assert workspace.experiment_name() is None
    monkeypatch.setenv("DVC_EXP_NAME", "gusty-lamb")
    assert workspace.experiment_name() == "gusty-lamb"
