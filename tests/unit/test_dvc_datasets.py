"""DVC-tracked inputs land in MLflow as dataset inputs of each stage run (a real SQLite store)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components import dvc_datasets, tracking

DVC_YAML = """
vars:
  - paths:
      prepared: data/prepared
      vae: models/vae
stages:
  prepare:
    cmd: python -m pipelines.prepare
    deps:
      - pipelines/prepare.py
    outs:
      - ${paths.prepared}
  train_vae:
    cmd: python -m pipelines.train --family vae
    deps:
      - pipelines/train.py
      - components/generative
      - ${paths.prepared}
    outs:
      - ${paths.vae}
"""


def _lock(md5: str) -> str:
    return json.dumps({"schema": "2.0", "stages": {
        "prepare": {"cmd": "x", "outs": [{"path": "data/prepared", "hash": "md5", "md5": f"{md5}.dir",
                                          "size": 1234, "nfiles": 3}]},
        "train_vae": {"cmd": "y", "deps": [{"path": "data/prepared", "md5": "stale.dir"}],
                      "outs": [{"path": "models/vae", "md5": "f" * 32 + ".dir"}]}}})


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A DVC project's files: dvc.yaml, dvc.lock, a remote, the prepared images table; cwd there."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.yaml").write_text(DVC_YAML)
    (tmp_path / "dvc.lock").write_text(_lock("a" * 32))
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_text("[core]\n    remote = store\n['remote \"store\"']\n"
                                              "    url = s3://bucket/capsynth\n")
    (tmp_path / "data" / "prepared").mkdir(parents=True)
    pq.write_table(pa.table({"image_id": [1, 2, 3], "split": ["train", "train", "test"]}),
                   tmp_path / "data" / "prepared" / "images.parquet")
    return tmp_path


def test_stage_inputs_are_the_deps_another_stage_outputs_with_its_lock_digest(project):
    [entry] = dvc_datasets.stage_inputs("train_vae")
    assert entry == {"path": "data/prepared", "md5": "a" * 32, "size": 1234, "nfiles": 3, "producer": "prepare"}
    assert dvc_datasets.stage_inputs("prepare") == []  # code deps only
    assert dvc_datasets.dvc_remote_url() == "s3://bucket/capsynth"


def _datasets(run_id: str) -> list:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking.tracking_uri(".")).get_run(run_id).inputs.dataset_inputs


def test_each_stage_run_logs_its_dvc_inputs_and_other_data_shows_another_digest(project):
    with tracking._restore_globals(), tracking.stage_run("train_vae", params={"lr": 1}) as first:
        pass
    [given] = _datasets(first)
    dataset = given.dataset
    assert dataset.name == "data/prepared" and dataset.digest == "a" * 32
    assert dataset.source_type == "dvc"
    source = json.loads(dataset.source)
    assert source["path"] == "data/prepared" and source["stage"] == "prepare"
    assert source["remote"] == "s3://bucket/capsynth" and source["rev"]
    profile = json.loads(dataset.profile)
    assert profile == {"size": 1234, "nfiles": 3, "num_rows": 3, "splits": {"test": 1, "train": 2}}
    assert {t.key: t.value for t in given.tags}["mlflow.data.context"] == "train_vae"

    (project / "dvc.lock").write_text(_lock("b" * 32))  # prepare ran again on other data
    with tracking._restore_globals(), tracking.stage_run("train_vae", params={"lr": 1}) as second:
        pass
    assert [d.dataset.digest for d in _datasets(second)] == ["b" * 32]


def test_outside_a_dvc_project_nothing_is_logged(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    with tracking._restore_globals(), tracking.stage_run("train_vae", params={}) as run_id:
        pass
    assert _datasets(run_id) == []
