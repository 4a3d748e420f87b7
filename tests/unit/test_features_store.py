"""Feature store: shard schema, deterministic shard layout, zero-copy read-back."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.features.store import (
    LAYOUT,
    FeatureSet,
    ShardWriter,
    features_schema,
    features_table,
    load_features,
    write_meta,
)

C, G = 8, 2  # channels, grid size
P = G * G


def _rows(n: int, dtype: str = "float16", start: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(start)
    ids = np.arange(start, start + n, dtype=np.int64) * 10 + 1
    grid = rng.normal(size=(n, P, C)).astype(dtype)
    pooled = grid.mean(axis=1).astype(dtype)
    return ids, grid, pooled


def _write(out, chunks, *, dtype="float16", max_shard_bytes=10**9) -> list[dict]:
    writer = ShardWriter(out, channels=C, grid_size=G, dtype=dtype, max_shard_bytes=max_shard_bytes)
    for ids, grid, pooled in chunks:
        writer.write(features_table(ids, grid, pooled))
    shards = writer.close()
    n = sum(len(c[0]) for c in chunks)
    write_meta(out, {"backbone": "test", "channels": C, "grid_size": G, "dtype": dtype, "num_images": n,
                     "layout": LAYOUT, "shards": shards})
    return shards


def test_schema_is_fixed_size_lists():
    schema = features_schema(channels=C, grid_size=G, dtype="float16")
    assert schema.field("image_id").type == pa.int64()
    assert schema.field("grid").type == pa.list_(pa.field("element", pa.float16(), nullable=False), P * C)
    assert schema.field("pooled").type.list_size == C
    assert features_schema(channels=C, grid_size=G, dtype="float32").field("pooled").type.value_type == pa.float32()


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_single_shard_reads_back_zero_copy(tmp_path, dtype):
    ids, grid, pooled = _rows(10, dtype)
    _write(tmp_path, [(ids[:3], grid[:3], pooled[:3]), (ids[3:], grid[3:], pooled[3:])], dtype=dtype)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta.json", "part-00000.parquet"]
    assert pq.ParquetFile(tmp_path / "part-00000.parquet").metadata.num_row_groups == 1

    fs = load_features(tmp_path)
    assert isinstance(fs, FeatureSet) and len(fs) == 10
    assert fs.image_ids.dtype == np.int64 and fs.grid.dtype == np.dtype(dtype)
    assert fs.grid.shape == (10, P, C) and fs.pooled.shape == (10, C)
    np.testing.assert_array_equal(fs.image_ids, ids)
    np.testing.assert_array_equal(fs.grid, grid)
    np.testing.assert_array_equal(fs.pooled, pooled)
    # views of Arrow's buffers: no numpy copy was made
    assert not fs.grid.flags.owndata and not fs.grid.flags.writeable
    assert fs.meta["layout"] == LAYOUT


def test_several_shards_concatenate(tmp_path):
    ids, grid, pooled = _rows(25)
    row_bytes = 8 + (P + 1) * C * 2
    shards = _write(tmp_path, [(ids, grid, pooled)], max_shard_bytes=10 * row_bytes)
    assert [s["num_rows"] for s in shards] == [10, 10, 5]
    fs = load_features(tmp_path)
    np.testing.assert_array_equal(fs.image_ids, ids)
    np.testing.assert_array_equal(fs.grid, grid)
    np.testing.assert_array_equal(fs.pooled, pooled)


def test_layout_does_not_depend_on_batching(tmp_path):
    ids, grid, pooled = _rows(23)
    row_bytes = 8 + (P + 1) * C * 2
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    _write(a, [(ids, grid, pooled)], max_shard_bytes=7 * row_bytes)
    cuts = [0, 1, 5, 6, 14, 23]
    _write(b, [(ids[i:j], grid[i:j], pooled[i:j]) for i, j in zip(cuts, cuts[1:])], max_shard_bytes=7 * row_bytes)
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir()) and len(names) == 5
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_rows_maps_ids_to_positions(tmp_path):
    ids, grid, pooled = _rows(6)
    _write(tmp_path, [(ids[::-1].copy(), grid, pooled)])
    fs = load_features(tmp_path)
    np.testing.assert_array_equal(fs.rows([1, 51, 21]), [5, 0, 3])
    with pytest.raises(KeyError, match="image_id 2 has no features"):
        fs.rows([1, 2])


def test_mismatches_are_errors(tmp_path):
    ids, grid, pooled = _rows(4)
    writer = ShardWriter(tmp_path, channels=C, grid_size=G, dtype="float32")
    with pytest.raises(ValueError, match="shard schema"):
        writer.write(features_table(ids, grid, pooled))  # float16 rows into a float32 writer
    with pytest.raises(ValueError, match="do not match"):
        features_table(ids, grid, pooled[:, :3])
    with pytest.raises(FileNotFoundError, match="meta.json"):
        load_features(tmp_path / "nothing")
    _write(tmp_path, [(ids, grid, pooled)])
    (tmp_path / "part-00000.parquet").unlink()
    with pytest.raises(FileNotFoundError, match="part-00000.parquet"):
        load_features(tmp_path)
