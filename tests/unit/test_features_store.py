"""Feature store: shard schema, deterministic shard layout, read-back in batches."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.features import store
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
def test_single_shard_reads_back(tmp_path, dtype):
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
    # copied batch by batch into arrays of their own, handed out read-only
    assert not any(a.flags.writeable for a in (fs.image_ids, fs.grid, fs.pooled))
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


def _whole_table_read(folder) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reference: every shard read as one table, its columns viewed and concatenated."""
    tables = [pq.read_table(path) for path in sorted(folder.glob("part-*.parquet"))]
    table = pa.concat_tables(tables)
    ids = table.column("image_id").to_numpy()
    grid = np.concatenate([c.flatten().to_numpy() for c in table.column("grid").chunks]).reshape(len(ids), P, C)
    pooled = np.concatenate([c.flatten().to_numpy() for c in table.column("pooled").chunks]).reshape(len(ids), C)
    return ids, grid, pooled


@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("shard_rows, batch_rows", [(None, 7), (10, 3), (10, 1), (10, 10), (10, 64), (7, 4)])
def test_batched_read_equals_whole_table_read(tmp_path, monkeypatch, dtype, shard_rows, batch_rows):
    """One shard or several; batches that divide neither N nor a shard, of one row, larger than a shard: the same
    arrays, dtype and order as reading every shard whole."""
    ids, grid, pooled = _rows(25, dtype)
    row_bytes = 8 + (P + 1) * C * np.dtype(dtype).itemsize
    shards = _write(tmp_path, [(ids, grid, pooled)], dtype=dtype,
                    max_shard_bytes=10**9 if shard_rows is None else shard_rows * row_bytes)
    assert len(shards) == (1 if shard_rows is None else -(-25 // shard_rows))
    monkeypatch.setattr(store, "READ_BATCH_BYTES", batch_rows * row_bytes + row_bytes - 1)  # -> batch_rows rows
    seen = []
    iter_batches = pq.ParquetFile.iter_batches

    def spy(self, *args, **kwargs):
        for batch in iter_batches(self, *args, **kwargs):
            seen.append(batch.num_rows)
            yield batch

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    fs = load_features(tmp_path)
    assert max(seen) == min(batch_rows, shard_rows or 25) and sum(seen) == 25  # it did read in those batches

    want_ids, want_grid, want_pooled = _whole_table_read(tmp_path)
    for got, want in ((fs.image_ids, want_ids), (fs.grid, want_grid), (fs.pooled, want_pooled)):
        assert got.dtype == want.dtype and got.shape == want.shape
        assert got.tobytes() == want.tobytes()  # bit for bit, NaN payloads included
    np.testing.assert_array_equal(fs.grid, grid)


def test_footer_rows_that_disagree_with_meta_are_errors(tmp_path):
    ids, grid, pooled = _rows(25)
    row_bytes = 8 + (P + 1) * C * 2
    shards = _write(tmp_path, [(ids, grid, pooled)], max_shard_bytes=10 * row_bytes)
    write_meta(tmp_path, {"backbone": "test", "channels": C, "grid_size": G, "dtype": "float16", "num_images": 30,
                          "layout": LAYOUT, "shards": shards})
    with pytest.raises(ValueError, match="shards hold 25 rows, meta.json says 30"):
        load_features(tmp_path)
    shards[2]["num_rows"] = 4
    write_meta(tmp_path, {"backbone": "test", "channels": C, "grid_size": G, "dtype": "float16", "num_images": 25,
                          "layout": LAYOUT, "shards": shards})
    with pytest.raises(ValueError, match=r"part-00002.parquet: does not match meta.json \(5 rows, expected 4"):
        load_features(tmp_path)
