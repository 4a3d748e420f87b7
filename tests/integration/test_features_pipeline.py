"""The features stage on tiny data with local Ray: outputs, determinism, bad images, atomicity."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from smoke_data import prepare_smoke

from components.data.images import BadImageError
from components.features.store import load_features
from components.features.weights import load_backbone
from pipelines import features as stage
from pipelines import prepare
from pipelines.config import write_profile_params
from tests.fixtures_formats import write_coco, write_corrupt_image

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The smoke profile's prepared synthetic dataset, in a folder that is the cwd during each test."""
    return prepare_smoke(tmp_path_factory, "features")


@pytest.fixture
def in_smoke(smoke, monkeypatch):
    work, params = smoke
    monkeypatch.chdir(work)
    return params.features


@pytest.fixture(scope="module")
def first_run(smoke, ray_session):
    work, params = smoke
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        meta = stage.run(params.features, Path("data/prepared"), Path("data/features"), progress=False)
    return meta


def test_stage_writes_grid_and_pooled_features(in_smoke, first_run, smoke):
    cfg, meta = in_smoke, first_run
    out = Path("data/features")
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "part-00000.parquet"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["features", "prepared"]  # no temporaries
    images = pq.read_table("data/prepared/images.parquet")
    fs = load_features(out)
    n, g = images.num_rows, cfg.grid_size
    np.testing.assert_array_equal(fs.image_ids, images.column("image_id").to_numpy())  # table order
    c = {1: 64, 2: 128, 3: 256, 4: 512}[cfg.stage]  # resnet18
    assert fs.grid.shape == (n, g * g, c) and fs.grid.dtype == np.float16
    assert fs.pooled.shape == (n, c) and fs.pooled.dtype == np.float16
    assert np.isfinite(fs.grid).all() and np.isfinite(fs.pooled).all()
    assert fs.grid.astype(np.float32).std() > 0
    assert len({fs.pooled[i].tobytes() for i in range(n)}) == n  # every image has its own features
    # pooled is the mean of the feature map: of the grid too, when the grid divides the map
    np.testing.assert_allclose(fs.pooled.astype(np.float32), fs.grid.astype(np.float32).mean(axis=1),
                               rtol=1e-2, atol=1e-2)
    assert meta["feature_map_size"] % g == 0
    _, info = load_backbone(cfg.backbone, weights=cfg.weights, seed=cfg.seed, grid_size=g, stage=cfg.stage)
    expected = {"backbone": "resnet18", "weights": "random", "weights_sha256": info.sha256, "seed": 0,
                "input_size": cfg.input_size, "stage": cfg.stage, "grid_size": g, "channels": c,
                "dtype": "float16", "num_images": n}
    assert {k: meta[k] for k in expected} == expected
    assert json.loads((out / "meta.json").read_text()) == meta


def test_rerun_gives_identical_files(in_smoke, first_run):
    stage.run(in_smoke, Path("data/prepared"), Path("again"), progress=False)
    assert _tree(Path("again")) == _tree(Path("data/features"))


def test_float32_other_batch_size_same_features(in_smoke, first_run):
    cfg = dataclasses.replace(in_smoke, dtype="float32", batch_size=7)
    meta = stage.run(cfg, Path("data/prepared"), Path("f32"), progress=False)
    assert meta["dtype"] == "float32"
    a, b = load_features("data/features"), load_features("f32")
    assert b.grid.dtype == np.float32 and b.pooled.dtype == np.float32
    np.testing.assert_array_equal(a.image_ids, b.image_ids)
    np.testing.assert_allclose(a.grid.astype(np.float32), b.grid, rtol=2e-3, atol=2e-3)


def test_bad_images_skipped_by_prepare_are_never_read(tmp_path, monkeypatch, ray_session, smoke):
    _, params = smoke
    monkeypatch.chdir(tmp_path)
    source = write_coco(tmp_path / "coco")
    write_corrupt_image(Path(source.images_dir) / "COCO_train2014_000000000025.jpg")
    os.remove(Path(source.images_dir) / "COCO_train2014_000000000030.png")
    cfg = dataclasses.replace(params.prepare, dataset="coco", sources=(source,))
    report = prepare.run(cfg, Path("prepared"), Path("report.json"), progress=False)
    assert report["counts"]["images_kept"] == 1
    assert {"corrupt_image", "missing_image"} <= set(report["skipped_counts"])
    # the stage reads only the table's rows: the corrupt and the missing file are never opened
    stage.run(params.features, Path("prepared"), Path("features"), progress=False)
    fs = load_features("features")
    assert fs.image_ids.tolist() == [9] == pq.read_table("prepared/images.parquet").column("image_id").to_pylist()


def test_unreadable_image_fails_naming_it_and_leaves_no_output(in_smoke, first_run, tmp_path):
    images = pq.read_table("data/prepared/images.parquet")
    broken = tmp_path / "prepared"
    broken.mkdir()
    paths = images.column("path").to_pylist()
    paths[5] = str(tmp_path / "gone.png")  # e.g. deleted after prepare ran
    pq.write_table(images.set_column(1, "path", [paths]), broken / "images.parquet")
    with pytest.raises(BadImageError, match=r"gone\.png: missing image") as err:
        stage.run(in_smoke, broken, tmp_path / "out", progress=False)
    assert "\n" not in str(err.value)  # the plain error, not Ray's wrapper with its traceback
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]  # nothing half-written


@pytest.mark.slow
def test_killed_run_leaves_no_output_and_rerun_completes(smoke, tmp_path):
    """SIGKILL the stage mid-run: the output never appears; a rerun cleans up and completes."""
    work, _ = smoke
    params = tmp_path / "params.yaml"
    write_profile_params(REPO / "params.yaml", "smoke", params)
    out = tmp_path / "features"
    cmd = [sys.executable, "-m", "pipelines.features", "--params", str(params),
           "--prepared", str(work / "data/prepared"), "--out", str(out), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 300  # Ray starting on a loaded 2-core machine
        while not list(tmp_path.glob(".features.tmp-*")) and time.time() < deadline:
            time.sleep(0.2)
        assert list(tmp_path.glob(".features.tmp-*")), "the stage never started writing"
        os.killpg(proc.pid, signal.SIGKILL)  # the stage and the Ray processes it started
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not out.exists()
    done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert load_features(out).grid.shape[0] == pq.read_metadata(work / "data/prepared/images.parquet").num_rows
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features", "params.yaml"]
