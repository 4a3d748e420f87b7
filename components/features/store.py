"""The feature store: Parquet shards of image features, and reading them back.

Folder written by the ``features`` stage (``data/features/``), named by :class:`FeaturesDir`::

    part-00000.parquet, part-00001.parquet, ...   the rows, in images-table order
    meta.json                                     what produced them (below)

Shard schema (:func:`features_schema`), one row per image:

    ========  ===============================  =====================================
    image_id  int64                            foreign key into ``images.parquet``
    grid      fixed_size_list<dtype>[P * C]    the attention grid, (P, C) row-major:
                                               position ``p = row * g + col`` (raster
                                               order over the ``g x g`` grid), then
                                               channel
    pooled    fixed_size_list<dtype>[C]        global average of the feature map
    ========  ===============================  =====================================

``dtype`` is ``float16`` or ``float32`` (``meta.json: dtype``), ``P = grid_size**2``.
Each shard is one row group, written uncompressed and without dictionary
encoding, so reading it is one pass at memory speed.

``meta.json``: ``backbone``, ``weights`` (``random`` | ``imagenet`` | ``path``),
``weights_source``, ``weights_sha256``, ``input_size``, ``grid_size``,
``channels``, ``dtype``, ``num_images``, ``layout``, ``shards`` (file and rows),
``compute`` (device, precision: the numerics the features came from).

Reading back (:func:`load_features`): the arrays are allocated once, at their
final size (row counts from the shards' Parquet metadata), and filled shard by
shard, ``READ_BATCH_BYTES`` of rows at a time (``ParquetFile.iter_batches``,
read through a small buffer: neither the file nor a whole column chunk is ever
resident). Each batch is decoded by Arrow, copied into its slice of the arrays
and released, so the peak is the arrays plus one small batch and its decoding
buffers: one copy of every value, instead of decoding a whole shard (about 5x
its size at once) and viewing it.

Memory for ``N`` images: ``N * (grid_size**2 + 1) * C * bytes(dtype) + 8 * N``
bytes, e.g. 3,000 images, resnet18 stage 2 (C = 128), grid 12, float16: 111 MB;
MS COCO (123,287 images), resnet101 (C = 2048), grid 7 (224 px), float16: 25.2 GB.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from components.io import write_json

META_FILE = "meta.json"
SHARD_PATTERN = "part-{:05d}.parquet"
DTYPES = {"float16": pa.float16(), "float32": pa.float32()}
READ_BATCH_BYTES = 2**20  # rows read and decoded at a time by load_features (at least one row)
LAYOUT = "grid: (N, P, C), P = grid_size**2 positions in raster order (p = row * grid_size + col)"
DEFAULT_MAX_SHARD_BYTES = 512 * 2**20


@dataclasses.dataclass(frozen=True)
class FeaturesDir:
    """The folder the ``features`` stage writes (layout in the module docstring).

    Attributes:
        root: The folder (``data/features`` in ``dvc.yaml``); a str is made a Path.
    """

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def meta(self) -> Path:
        """``meta.json``: what produced the features, and the shards (file and rows)."""
        return self.root / META_FILE

    def shard(self, index: int) -> Path:
        """Shard ``index`` (0-based, in images-table order): ``part-{index:05d}.parquet``."""
        return self.root / SHARD_PATTERN.format(index)


def features_schema(*, channels: int, grid_size: int, dtype: str) -> pa.Schema:
    """The shard schema for ``channels`` C, a ``grid_size`` grid and ``dtype``."""
    value = DTYPES[dtype]
    return pa.schema([
        pa.field("image_id", pa.int64(), nullable=False),
        pa.field("grid", pa.list_(pa.field("element", value, nullable=False), grid_size**2 * channels),
                 nullable=False),
        pa.field("pooled", pa.list_(pa.field("element", value, nullable=False), channels), nullable=False),
    ])


def features_table(image_ids: np.ndarray, grid: np.ndarray, pooled: np.ndarray) -> pa.Table:
    """Rows of the shard schema from arrays, without copying them.

    Args:
        image_ids: (B,) int64.
        grid: (B, P, C) float16 or float32, C-contiguous.
        pooled: (B, C), same dtype.
    """
    n, p, c = grid.shape
    dtype = str(grid.dtype)
    schema = features_schema(channels=c, grid_size=int(round(p**0.5)), dtype=dtype)
    if pooled.shape != (n, c) or pooled.dtype != grid.dtype or int(round(p**0.5)) ** 2 != p:
        raise ValueError(f"grid {grid.shape} {grid.dtype} and pooled {pooled.shape} {pooled.dtype} do not match")
    columns = [
        pa.array(np.ascontiguousarray(image_ids, dtype=np.int64)),
        pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(grid).reshape(-1)), p * c),
        pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(pooled).reshape(-1)), c),
    ]
    return pa.Table.from_arrays(columns, schema=schema)


class ShardWriter:
    """Writes rows, in the order given, into shards of a fixed number of rows.

    The layout depends only on the rows, never on how they arrive in batches:
    every shard holds ``rows_per_shard`` rows (the last one fewer) in a single
    row group. So the same rows give byte-identical files.

    Args:
        out_dir: Folder to write into (exists; the caller makes it atomic).
        channels: C.
        grid_size: g.
        dtype: ``float16`` or ``float32``.
        max_shard_bytes: Shard size limit; also the writer's buffer.
    """

    def __init__(self, out_dir: str | os.PathLike, *, channels: int, grid_size: int, dtype: str,
                 max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES):
        self.folder = FeaturesDir(out_dir)
        self.schema = features_schema(channels=channels, grid_size=grid_size, dtype=dtype)
        row_bytes = 8 + (grid_size**2 + 1) * channels * DTYPES[dtype].byte_width
        self.rows_per_shard = max(1, max_shard_bytes // row_bytes)
        self.shards: list[dict[str, Any]] = []
        self._pending: list[pa.Table] = []
        self._pending_rows = 0

    def write(self, table: pa.Table) -> None:
        """Append rows (a table of the shard schema); full shards are written out."""
        if not table.schema.equals(self.schema):
            raise ValueError(f"rows do not match the shard schema:\n{table.schema}\nexpected\n{self.schema}")
        while table.num_rows:
            take = min(table.num_rows, self.rows_per_shard - self._pending_rows)
            self._pending.append(table.slice(0, take))
            self._pending_rows += take
            table = table.slice(take)
            if self._pending_rows == self.rows_per_shard:
                self._flush()

    def _flush(self) -> None:
        if not self._pending_rows:
            return
        table = pa.concat_tables(self._pending).combine_chunks()
        path = self.folder.shard(len(self.shards))
        pq.write_table(table, path, row_group_size=table.num_rows, compression="none",
                       use_dictionary=False, write_statistics=["image_id"], store_schema=True)
        self.shards.append({"file": path.name, "num_rows": table.num_rows})
        self._pending, self._pending_rows = [], 0

    def close(self) -> list[dict[str, Any]]:
        """Write the last shard; return ``[{"file", "num_rows"}, ...]``."""
        self._flush()
        return self.shards


def write_meta(out_dir: str | os.PathLike, meta: dict[str, Any]) -> None:
    write_json(FeaturesDir(out_dir).meta, meta)


def read_meta(features_dir: str | os.PathLike) -> dict[str, Any]:
    path = FeaturesDir(features_dir).meta
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {features_dir} the output of the features stage?")
    return json.loads(path.read_text())


@dataclasses.dataclass(frozen=True)
class FeatureSet:
    """Features of N images, as numpy arrays (read-only as :func:`load_features` returns them).

    Attributes:
        image_ids: (N,) int64, in images-table order.
        grid: (N, P, C), P = grid_size**2 positions in raster order.
        pooled: (N, C).
        meta: The folder's ``meta.json``.
    """

    image_ids: np.ndarray
    grid: np.ndarray
    pooled: np.ndarray
    meta: dict[str, Any]

    def __len__(self) -> int:
        return len(self.image_ids)

    def rows(self, image_ids: np.ndarray | list[int]) -> np.ndarray:
        """Row indices of ``image_ids`` (int64); a KeyError names an unknown id."""
        wanted = np.asarray(image_ids, dtype=np.int64)
        order = np.argsort(self.image_ids, kind="stable")
        pos = np.searchsorted(self.image_ids, wanted, sorter=order)
        pos = np.minimum(pos, len(order) - 1)
        rows = order[pos]
        bad = self.image_ids[rows] != wanted
        if bad.any():
            raise KeyError(f"image_id {int(wanted[bad][0])} has no features")
        return rows


def _open_shard(features_dir: Path, shard: dict[str, Any], schema: pa.Schema) -> pq.ParquetFile:
    """The shard, checked against ``meta.json`` (schema, rows) from its footer alone; read with a 1 MiB buffer.

    ``pre_buffer=False`` and ``buffer_size``: pages are read as the batches need them, not the whole
    column chunk at once (pyarrow's default pre-buffers it, and a memory map keeps every page touched).
    """
    path = features_dir / shard["file"]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: shard listed in {META_FILE} is missing")
    file = pq.ParquetFile(path, pre_buffer=False, buffer_size=2**20)
    num_rows, file_schema = file.metadata.num_rows, file.schema_arrow
    if not file_schema.equals(schema, check_metadata=False) or num_rows != shard["num_rows"]:
        file.close()
        raise ValueError(f"{path}: does not match {META_FILE} ({num_rows} rows, "
                         f"expected {shard['num_rows']}; schema {file_schema})")
    return file


def _values(column: pa.Array, shape: tuple[int, ...]) -> np.ndarray:
    """A zero-copy numpy view of a batch's column (a fixed_size_list's values), shaped ``shape``."""
    values = column.flatten() if pa.types.is_fixed_size_list(column.type) else column
    return values.to_numpy(zero_copy_only=True).reshape(shape)


def load_features(features_dir: str | os.PathLike) -> FeatureSet:
    """Read a features folder into numpy arrays, read-only, in images-table order.

    Peak memory: the arrays plus one batch of ``READ_BATCH_BYTES`` being decoded (module docstring).

    Raises:
        FileNotFoundError: no ``meta.json`` or a listed shard missing.
        ValueError: a shard that does not match ``meta.json``.
    """
    features_dir = Path(features_dir)
    meta = read_meta(features_dir)
    n, c, g, dtype = meta["num_images"], meta["channels"], meta["grid_size"], meta["dtype"]
    p = g * g
    schema = features_schema(channels=c, grid_size=g, dtype=dtype)
    shards = meta["shards"]
    files = []
    try:
        for shard in shards:  # every footer checked before anything is allocated
            files.append(_open_shard(features_dir, shard, schema))
        total = sum(f.metadata.num_rows for f in files)
        if total != n:
            raise ValueError(f"{features_dir}: shards hold {total} rows, {META_FILE} says {n}")

        out = {
            "image_id": np.empty(n, np.int64),
            "grid": np.empty((n, p, c), np.dtype(dtype)),
            "pooled": np.empty((n, c), np.dtype(dtype)),
        }
        row_bytes = 8 + (p + 1) * c * DTYPES[dtype].byte_width
        batch_rows = max(1, READ_BATCH_BYTES // row_bytes)
        start = 0
        for file in files:
            for batch in file.iter_batches(batch_size=batch_rows, columns=list(out), use_threads=False):
                stop = start + batch.num_rows
                for name, array in out.items():
                    array[start:stop] = _values(batch.column(name), (-1, *array.shape[1:]))
                start = stop
                del batch  # decoded buffers go back to the pool before the next batch
    finally:
        for file in files:
            file.close()
    if start != n:  # the footers said n
        raise ValueError(f"{features_dir}: shards yielded {start} rows, {META_FILE} says {n}")
    pa.default_memory_pool().release_unused()  # the decoding's freed buffers, back to the OS
    for array in out.values():
        array.flags.writeable = False
    return FeatureSet(out["image_id"], out["grid"], out["pooled"], meta)


__all__ = ["FeatureSet", "FeaturesDir", "ShardWriter", "features_schema", "features_table", "load_features",
           "read_meta", "write_meta", "META_FILE", "LAYOUT", "DTYPES", "READ_BATCH_BYTES"]
