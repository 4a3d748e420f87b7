"""The folder objects: the writers put their files where ``PreparedDir`` / ``FeaturesDir`` say, readers find them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from components.captioning.data import load_caption_data
from components.data.folders import PreparedDir, SyntheticDir
from components.data.synthetic import read_scenes, write_synthetic_coco
from components.features.store import (
    LAYOUT,
    FeaturesDir,
    ShardWriter,
    features_table,
    load_features,
    read_meta,
    write_meta,
)
from components.generative.data import image_splits
from pipelines import prepare
from pipelines.config import PrepareConfig, SyntheticConfig

C, G = 4, 2  # feature channels, grid size


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> PreparedDir:
    """A tiny synthetic dataset through the prepare stage's own ``run``."""
    cfg = PrepareConfig(dataset="synthetic", seed=0, on_bad_image="skip", min_word_count=1, max_caption_length=20,
                        num_workers=1, tokenizer="ptb", sources=(), split_file="",
                        synthetic=SyntheticConfig(num_images=10, image_size=16, captions_per_image=2, max_objects=2,
                                                  val_fraction=0.2, test_fraction=0.2))
    work = tmp_path_factory.mktemp("folders")
    prepare.run(cfg, work / "prepared", work / "report.json", progress=False)
    return PreparedDir(work / "prepared")


def _write_features(out: Path, image_ids: list[int], *, max_shard_bytes: int) -> list[dict]:
    """Random features of ``image_ids`` through the store's writers; returns the shard list."""
    rng = np.random.default_rng(0)
    grid = rng.normal(size=(len(image_ids), G * G, C)).astype(np.float16)  # (N, P, C)
    writer = ShardWriter(out, channels=C, grid_size=G, dtype="float16", max_shard_bytes=max_shard_bytes)
    writer.write(features_table(np.asarray(image_ids), grid, grid.mean(axis=1)))
    shards = writer.close()
    write_meta(out, {"backbone": "test", "channels": C, "grid_size": G, "dtype": "float16",
                     "num_images": len(image_ids), "layout": LAYOUT, "shards": shards})
    return shards


def test_roots_are_paths_and_frozen():
    assert PreparedDir("data/prepared").root == Path("data/prepared")
    assert FeaturesDir("data/features").meta == Path("data/features") / "meta.json"
    with pytest.raises(dataclasses.FrozenInstanceError):
        PreparedDir("a").root = Path("b")  # type: ignore[misc]


def test_prepare_writes_exactly_what_prepared_dir_names(prepared):
    names = {prepared.images, prepared.captions, prepared.vocab, prepared.synthetic.root}
    assert set(prepared.root.iterdir()) == names
    synthetic = prepared.synthetic
    assert set(synthetic.root.iterdir()) == {synthetic.images, synthetic.annotations, synthetic.scenes}
    assert set(synthetic.annotations.iterdir()) == {synthetic.captions(s) for s in ("train", "val", "test")}
    assert prepared.scenes == synthetic.scenes

    image_ids = pq.read_table(prepared.images, columns=["image_id"]).column("image_id").to_pylist()
    assert sorted(read_scenes(prepared.scenes)) == image_ids == list(range(1, 11))
    splits = image_splits(prepared.root)  # a reader: the images table, by the object
    assert sum(len(paths) for paths in splits.values()) == 10


def test_write_synthetic_coco_returns_the_synthetic_dir_paths(tmp_path):
    folder = SyntheticDir(tmp_path / "s")
    files = write_synthetic_coco(folder.root, num_images=3, image_size=8, seed=0, progress=False)
    assert files == {"images_dir": folder.images, "scenes": folder.scenes,
                     **{s: folder.captions(s) for s in ("train", "val", "test")}}


def test_store_writes_exactly_what_features_dir_names(tmp_path):
    row_bytes = 8 + (G * G + 1) * C * 2  # image_id + grid + pooled, float16
    shards = _write_features(tmp_path, [1, 2, 3], max_shard_bytes=2 * row_bytes)  # two rows per shard
    folder = FeaturesDir(tmp_path)
    assert [s["file"] for s in shards] == [folder.shard(0).name, folder.shard(1).name]
    assert set(tmp_path.iterdir()) == {folder.meta, folder.shard(0), folder.shard(1)}
    assert read_meta(tmp_path)["shards"] == shards
    assert load_features(tmp_path).image_ids.tolist() == [1, 2, 3]


def test_caption_data_reads_the_prepared_and_features_folders(prepared, tmp_path):
    image_ids = pq.read_table(prepared.images, columns=["image_id"]).column("image_id").to_pylist()
    _write_features(tmp_path, image_ids, max_shard_bytes=2**20)
    data = load_caption_data(tmp_path, prepared.root)
    captions = pq.read_table(prepared.captions).num_rows
    assert sum(len(s.caption_rows) for s in data.splits.values()) == captions == 20
    assert set(data.splits) == {"train", "val", "test"} and len(data.vocab) > 4
