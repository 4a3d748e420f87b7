"""Feature extraction with Ray Data: images table → Parquet feature shards.

The pipeline (:func:`extract_features`)::

    images table (image_id, path)                        driver: blocks of batch_size rows
      → decode + resize, uint8 (B, S, S, 3)              Ray tasks, 1 CPU each (no torch)
      → Backbone → grid (B, P, C), pooled (B, C)         actor pool (map_batches with a
                                                         callable class): threads_per_actor
                                                         CPUs each, and 1 GPU if any
      → ShardWriter                                      driver: part-*.parquet, meta.json

Design, for throughput on a small CPU machine as on a GPU node:

* What crosses the object store is ``uint8`` pixels (4x less than float32),
  converted to float and normalized inside the actor (on the GPU when there is
  one), and the features in their storage dtype (``float16`` by default).
* Decoding and the model run in separate processes and overlap (Ray Data
  would fuse a task stage into the next actor stage with the same resources;
  the actor's memory reservation keeps them apart). Blocks of ``batch_size``
  images amortize the per-task cost.
* The model step is one class, :class:`Featurizer`, shared with the baseline
  of ``bench/features`` so both measure the same work. Each actor reserves the
  CPUs of its torch threads and sets the thread count in the thread that runs
  the model (Ray starts workers with ``OMP_NUM_THREADS`` = their CPUs).
* Deterministic: the input is cut into blocks of exactly ``batch_size`` rows,
  so every model call sees the same images whatever the scheduling; the order
  is preserved; the driver writes the shards (fixed rows per shard), so the
  same inputs and params give byte-identical files. On a cluster the output
  lands on the driver's disk, where DVC expects it.
* Images are read by absolute path (relative paths resolve against ``root``),
  so on a cluster the image folder must be visible at the same path on every
  node (a shared filesystem).

Ray Data is used here only; ``backbones``, ``weights``, ``store`` and ``decode`` are plain
libraries, and starting Ray is :mod:`components.ray_adapter`'s job.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import torch

from components.config import ConfigError
from components.data.images import BadImageError
from components.features.backbones import Backbone, get_spec
from components.features.decode import ImageDecodeError, decode_batch, load_resized  # noqa: F401
from components.features.store import LAYOUT, ShardWriter, features_table, write_meta
from components.features.weights import WeightsError, backbone_from_state, load_backbone
from components.train.precision import autocast_dtype
from components.train.precision import resolve as resolve_precision

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- the model step


@dataclasses.dataclass(frozen=True)
class ModelOptions:
    """How a :class:`Featurizer` runs its backbone."""

    backbone: str
    grid_size: int
    stage: int = 4  # where the trunk ends (output stride 4, 8, 16, 32)
    dtype: str = "float16"  # storage dtype of grid and pooled
    device: str = "cpu"  # cpu | cuda
    precision: str = "auto"  # bf16 autocast: auto | bf16 | fp32 (components.train.precision)
    channels_last: bool = True
    threads: int = 1  # torch intra-op threads


class Featurizer:
    """uint8 images → features table; the ``map_batches`` callable class (one per actor).

    Args:
        state: The backbone's state_dict, or a Ray object ref of it (fetched once).
        options: Backbone name, grid, storage dtype, device and numerics.
        backbone: A built backbone to use as is (the in-process baseline), instead of ``state``.
    """

    def __init__(self, state: Any, options: ModelOptions, backbone: Backbone | None = None):
        self.options = options
        self._threads_set_in: int | None = None
        self._set_threads()
        self.device = torch.device(options.device)
        if backbone is None:
            if isinstance(state, ray.ObjectRef):
                state = ray.get(state)
            backbone = backbone_from_state(options.backbone, state, grid_size=options.grid_size,
                                           stage=options.stage)
        self.memory_format = torch.channels_last if options.channels_last else torch.contiguous_format
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = False  # deterministic algorithms, same features every run
            torch.backends.cudnn.deterministic = True
        self.model = backbone.to(self.device, memory_format=self.memory_format).eval()
        self.out_dtype = torch.float16 if options.dtype == "float16" else torch.float32
        self.autocast = autocast_dtype(options.precision, self.device)

    def _set_threads(self) -> None:
        # Per calling thread: OpenMP's thread count is a per-thread setting, and Ray Data
        # calls the UDF from another thread than the constructor.
        if self._threads_set_in != threading.get_ident():
            torch.set_num_threads(max(1, self.options.threads))
            self._threads_set_in = threading.get_ident()

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        """``{image_id (B,), image (B, S, S, 3) uint8}`` → rows of the shard schema."""
        self._set_threads()
        with warnings.catch_warnings():  # Ray hands read-only views; nothing writes to them
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            pixels = torch.from_numpy(batch["image"])  # (B, S, S, 3) uint8
        x = pixels.to(self.device, non_blocking=True).permute(0, 3, 1, 2)  # (B, 3, S, S)
        x = x.to(torch.float32).div_(255.0).contiguous(memory_format=self.memory_format)
        with torch.inference_mode(), (
            torch.autocast(self.device.type, dtype=self.autocast) if self.autocast else contextlib.nullcontext()
        ):
            grid, pooled = self.model.extract(x)  # (B, C, g, g), (B, C)
        grid = grid.flatten(2).transpose(1, 2)  # (B, P, C), P = g * g in raster order
        grid = grid.to(self.out_dtype).contiguous().cpu().numpy()
        pooled = pooled.to(self.out_dtype).contiguous().cpu().numpy()
        if self.out_dtype == torch.float16 and not (np.isfinite(grid).all() and np.isfinite(pooled).all()):
            raise ValueError(f"{self.options.backbone} features overflow float16; use dtype: float32")
        return features_table(batch["image_id"], grid, pooled)


# --------------------------------------------------------------------------- the pipeline


def read_image_table(images_table: str | os.PathLike, *, root: str | os.PathLike | None = None) -> pa.Table:
    """``image_id, path`` of ``images.parquet``, paths made absolute against ``root`` (default: cwd)."""
    table = pq.read_table(images_table, columns=["image_id", "path"])
    base = Path(root) if root is not None else Path.cwd()
    paths = [p if "://" in p or os.path.isabs(p) else str((base / p).resolve())
             for p in table.column("path").to_pylist()]
    return pa.table({"image_id": table.column("image_id").combine_chunks(), "path": pa.array(paths)})


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when the Ray cluster has GPUs, else ``cpu``."""
    if device != "auto":
        return device
    return "cuda" if ray.cluster_resources().get("GPU", 0) >= 1 else "cpu"


def build_dataset(
    images: pa.Table,
    state_ref: Any,
    options: ModelOptions,
    *,
    input_size: int,
    batch_size: int,
    num_actors: int,
    num_decode_tasks: int,
    actor_memory: int = 2**30,
    progress: bool = True,
):
    """The lazy Ray Dataset of feature rows (``image_id, grid, pooled``), in input order."""
    from ray.data import ActorPoolStrategy, TaskPoolStrategy

    # blocks of exactly batch_size rows: every model call sees the same images on every run.
    # from_blocks keeps the blocks as given and computes their metadata here (from_arrow
    # would launch one remote task per block for it); it is a DeveloperAPI, hence the fallback.
    blocks = [images.slice(i, batch_size) for i in range(0, images.num_rows, batch_size)]
    ds = getattr(ray.data, "from_blocks", ray.data.from_arrow)(blocks)
    # settings of this dataset only (its own copy of the context, shared by what derives from it)
    ctx = ds.context
    ctx.execution_options.preserve_order = True
    ctx.raise_original_map_exception = True  # a bad image reaches the driver as a BadImageError
    ctx.enable_progress_bars = progress
    ctx.print_on_execution_start = progress
    ds = ds.map_batches(
        decode_batch,
        fn_kwargs={"input_size": input_size},
        batch_size=batch_size,
        batch_format="numpy",
        compute=TaskPoolStrategy(size=num_decode_tasks),
        num_cpus=1,
        udf_modifying_row_count=False,
    )
    gpu = options.device == "cuda"
    return ds.map_batches(
        Featurizer,
        fn_constructor_args=(state_ref, options),
        batch_size=batch_size,
        batch_format="numpy",
        compute=ActorPoolStrategy(size=num_actors),
        # an actor reserves the CPUs its torch threads use
        num_cpus=options.threads,
        num_gpus=1 if gpu else 0,
        # The model's memory. Being distinct from the decode tasks' resources, it also keeps
        # Ray Data from fusing decoding into the actor: decoding and the model overlap in
        # separate processes instead of taking turns in one.
        memory=actor_memory,
        udf_modifying_row_count=False,
    )


class _ProgressLines:
    """``features: 1,216/6,000 images (20%), 612 images/s``, each time another tenth is done."""

    def __init__(self, total: int):
        self.total, self.start, self.shown = total, time.monotonic(), 0

    def update(self, done: int) -> None:
        tenth = 10 * done // max(self.total, 1)
        if tenth > self.shown:
            self.shown = tenth
            rate = done / max(time.monotonic() - self.start, 1e-9)
            print(f"features: {done:,}/{self.total:,} images ({100 * done // self.total}%), {rate:.0f} images/s",
                  flush=True)


def extract_features(
    images_table: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    backbone: str,
    weights: str,
    weights_path: str = "",
    seed: int = 0,
    input_size: int = 128,
    stage: int = 4,
    grid_size: int = 4,
    batch_size: int = 64,
    dtype: str = "float16",
    num_actors: int = 1,
    threads_per_actor: int = 1,
    num_decode_tasks: int = 1,
    device: str = "auto",
    precision: str = "auto",
    channels_last: bool = True,
    root: str | os.PathLike | None = None,
    progress: bool = True,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Extract features of every image of ``images_table`` into ``out_dir``.

    Ray must be initialized (``components.ray_adapter.init_ray``). ``out_dir``
    must exist; the caller makes it atomic (``components.io.atomic_dir``).

    Args:
        images_table: ``images.parquet`` of the prepare stage (only its rows are read).
        out_dir: Folder for ``part-*.parquet`` and ``meta.json``.
        backbone: A key of ``BACKBONES``.
        weights: ``random`` | ``imagenet`` | ``path`` (``components.features.weights``).
        weights_path: The state_dict file for ``weights="path"``.
        seed: Seed of ``weights="random"``.
        input_size: Images are resized to this square size; 0: the backbone's native size.
        stage: Where the trunk ends, 1 to 4 (output stride 4, 8, 16, 32; 4: the whole trunk).
        grid_size: The feature map is average-pooled to ``grid_size x grid_size``.
        batch_size: Images per model call (and per decode task).
        dtype: Storage dtype of the features, ``float16`` or ``float32``.
        num_actors: Model actors (one GPU each on a GPU cluster).
        threads_per_actor: Torch threads per actor on the CPU.
        num_decode_tasks: Concurrent decode tasks.
        device: ``auto`` (GPU if the cluster has one) | ``cpu`` | ``cuda``.
        precision: ``auto`` (bf16 autocast on a GPU with bf16 or a CPU with AMX / AVX-512 BF16)
            | ``bf16`` | ``fp32`` (:mod:`components.train.precision`).
        channels_last: Run the model in channels-last memory format.
        root: Folder relative image paths are relative to (default: the cwd).
        progress: Show progress: Ray Data's bars on a terminal; elsewhere (a log
            file, ``dvc repro`` piped) one line per tenth of the images, instead
            of Ray Data's block of lines every 10 s.
        on_batch: Called with the row count of each batch as it arrives (benchmarks).

    Returns:
        The ``meta.json`` content written beside the shards.

    Raises:
        BadImageError: an image of the table cannot be decoded.
        WeightsNotFoundError, WeightsError: see ``load_backbone``.
        ConfigError: inconsistent sizes, or too few CPUs / GPUs for the actors.
    """
    spec = get_spec(backbone)
    try:
        size = spec.resolve_input_size(input_size)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if dtype not in ("float16", "float32"):
        raise ConfigError(f"dtype must be float16 or float32, got '{dtype}'")
    try:
        model, info = load_backbone(backbone, weights=weights, weights_path=weights_path, seed=seed,
                                    grid_size=grid_size, stage=stage)
    except WeightsError:
        raise
    except ValueError as err:  # an impossible stage
        raise ConfigError(str(err)) from None
    fmap = model.feature_map_size(size)
    if grid_size > fmap:
        raise ConfigError(f"grid_size {grid_size} is larger than {backbone}'s {fmap}x{fmap} feature map "
                          f"(stage {stage}, input_size {size}): lower grid_size, or raise input_size "
                          f"or lower stage")

    device = resolve_device(device)
    _check_resources(device, num_actors=num_actors, threads_per_actor=threads_per_actor,
                     num_decode_tasks=num_decode_tasks)
    images = read_image_table(images_table, root=root)
    options = ModelOptions(backbone=backbone, grid_size=grid_size, stage=stage, dtype=dtype,
                           device=device, precision=precision, channels_last=channels_last,
                           threads=threads_per_actor)
    log.info("features: %d images, %s stage %d (%s weights, sha256 %s…), %d px → %dx%d map → %dx%d grid, "
             "%s on %s", images.num_rows, backbone, stage, weights, info.sha256[:12], size, fmap, fmap,
             grid_size, grid_size, dtype, device)

    channels = spec.stage_channels(stage)
    writer = ShardWriter(out_dir, channels=channels, grid_size=grid_size, dtype=dtype)
    state_ref = ray.put(model.state_dict())
    rows = 0
    weight_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    bars = progress and sys.stdout.isatty()
    lines = _ProgressLines(images.num_rows) if progress and not bars else None
    ds = build_dataset(images, state_ref, options, input_size=size, batch_size=batch_size,
                       num_actors=num_actors, num_decode_tasks=num_decode_tasks,
                       actor_memory=2**30 + 2 * weight_bytes, progress=bars)
    try:
        for table in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=2):
            writer.write(table)
            rows += table.num_rows
            if lines is not None:
                lines.update(rows)
            if on_batch is not None:
                on_batch(table.num_rows)
    except BadImageError as err:  # Ray's wrapper of it: re-raise the plain error, one line
        raise ImageDecodeError(err.kind, err.path, err.detail) from None
    shards = writer.close()
    if rows != images.num_rows:
        raise RuntimeError(f"the pipeline returned {rows} rows for {images.num_rows} images")

    meta = {
        "backbone": backbone,
        "weights": info.choice,
        "weights_source": info.source,
        "weights_sha256": info.sha256,
        "seed": seed if weights == "random" else None,
        "input_size": size,
        "stage": stage,
        "feature_map_size": fmap,
        "grid_size": grid_size,
        "channels": channels,
        "dtype": dtype,
        "num_images": rows,
        "layout": LAYOUT,
        "normalization": {"mean": list(spec.mean), "std": list(spec.std)},
        "compute": {"device": device, "precision": resolve_precision(precision, device),
                    "batch_size": batch_size},
        "shards": shards,
    }
    write_meta(out_dir, meta)
    return meta


def _check_resources(device: str, *, num_actors: int, threads_per_actor: int, num_decode_tasks: int) -> None:
    """Fail early, with the numbers, when the actors and decode tasks cannot all be placed."""
    if min(num_actors, threads_per_actor, num_decode_tasks) < 1:
        raise ConfigError("num_actors, threads_per_actor and num_decode_tasks must be >= 1")
    total = ray.cluster_resources()
    cpus, gpus = total.get("CPU", 0), total.get("GPU", 0)
    if device == "cuda" and gpus < num_actors:
        raise ConfigError(f"{num_actors} model actors need {num_actors} GPUs; the Ray cluster has {gpus:g}")
    need = num_actors * threads_per_actor + num_decode_tasks
    if cpus < need:
        raise ConfigError(
            f"{num_actors} model actor(s) x {threads_per_actor} threads + {num_decode_tasks} decode "
            f"task(s) need {need} CPUs; the Ray cluster has {cpus:g}"
        )


__all__ = ["Featurizer", "ModelOptions", "decode_batch", "load_resized", "read_image_table",
           "build_dataset", "extract_features"]
