"""Benchmark: the features stage's Ray Data pipeline against a plain PyTorch loop.

    .venv/bin/python -m bench.features --num-images 2000 --backbone resnet18 --input-size 128

Both sides do the same work on the same generated images, with the same
backbone weights, batch size and model code (``Featurizer``) and the same
processes: the baseline is a ``torch.utils.data.DataLoader`` with
``--decode-workers`` worker processes decoding, and the model in the main
process with ``--threads`` torch threads, writing the same Parquet shards; the
Ray side is ``extract_features``: ``--decode-workers`` decode tasks, one model
actor with ``--threads`` threads, the driver writing the shards.

Throughput is steady state: the images done between the batch that completes
10% of them and the one that completes 90%, divided by the time between the
two (leaving out the warm-up and the final drain of buffers). Everything
before the first batch out (Ray cluster start, actor start, model load, the
first batch itself) is the start-up cost, printed on its own line. With ``--rounds N`` the two sides
alternate N times on one Ray instance (later rounds start actors only) and
the median ratio is printed; this evens out a machine shared with other work.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, Dataset

from components.data.folders import PreparedDir
from components.data.synthetic import write_synthetic_coco
from components.features.backbones import get_spec
from components.features.decode import load_resized
from components.features.extract import Featurizer, ModelOptions, extract_features
from components.features.store import ShardWriter
from components.features.weights import load_backbone
from components.ray_adapter import init_ray


class _Clock:
    """Timestamps of batches as they come out: start-up and steady-state throughput.

    Steady state is the middle of the run, from the batch that completes 10% of
    the images to the one that completes 90%: it leaves out the warm-up, and
    the end, where a pipeline drains its buffers in a burst (which would
    flatter it).
    """

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.times: list[float] = []
        self.done: list[int] = []  # images done after each batch

    def batch(self, rows: int) -> None:
        self.times.append(time.perf_counter())
        self.done.append((self.done[-1] if self.done else 0) + rows)

    def _at(self, fraction: float) -> int:
        return next(i for i, d in enumerate(self.done) if d >= fraction * self.done[-1])

    @property
    def startup_s(self) -> float:
        """Start to the first batch out."""
        return self.times[0] - self.start

    @property
    def steady_ips(self) -> float:
        a, b = self._at(0.1), self._at(0.9)
        return (self.done[b] - self.done[a]) / (self.times[b] - self.times[a]) if b > a else float("nan")

    @property
    def total_s(self) -> float:
        return self.times[-1] - self.start


class _Images(Dataset):
    def __init__(self, table: pa.Table, size: int):
        self.ids = table.column("image_id").to_numpy()
        self.paths = table.column("path").to_pylist()
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray]:
        return int(self.ids[i]), load_resized(self.paths[i], self.size)  # (S, S, 3) uint8


def write_images(prepared: PreparedDir, *, num_images: int, image_size: int) -> pa.Table:
    """Synthetic scenes (the demo dataset's generator) and their images table, written where prepare puts them."""
    files = write_synthetic_coco(prepared.synthetic.root, num_images=num_images, image_size=image_size, seed=0,
                                 progress=False)
    paths = sorted(str(p) for p in files["images_dir"].glob("*.png"))
    table = pa.table({"image_id": pa.array(np.arange(1, len(paths) + 1), pa.int64()), "path": paths})
    pq.write_table(table, prepared.images)
    return table


def run_baseline(table: pa.Table, out: Path, model, options: ModelOptions, *, size: int, batch_size: int,
                 workers: int) -> _Clock:
    """DataLoader (``workers`` decode processes) + the model in this process."""
    threads = torch.get_num_threads()
    clock = _Clock()
    featurize = Featurizer(None, options, backbone=model)
    writer = ShardWriter(out, channels=model.channels, grid_size=options.grid_size, dtype=options.dtype)
    loader = DataLoader(_Images(table, size), batch_size=batch_size, num_workers=workers,
                        persistent_workers=False)
    for ids, images in loader:
        writer.write(featurize({"image_id": ids.numpy(), "image": images.numpy()}))
        clock.batch(len(ids))
    writer.close()
    torch.set_num_threads(threads)
    return clock


def run_ray(images_parquet: Path, out: Path, *, backbone: str, size: int, stage: int, grid_size: int,
            batch_size: int, threads: int, workers: int, dtype: str, precision: str = "fp32") -> _Clock:
    """The stage's pipeline, as the stage calls it (cluster start included the first time)."""
    clock = _Clock()
    # logical CPUs enough for the configuration, so --threads 2 runs on 2 cores as the baseline does
    init_ray(num_cpus=max(os.cpu_count() or 1, threads + workers))
    extract_features(images_parquet, out, backbone=backbone, weights="random", seed=0, input_size=size,
                     stage=stage, grid_size=grid_size, batch_size=batch_size, dtype=dtype, num_actors=1,
                     threads_per_actor=threads, num_decode_tasks=workers, device="cpu",
                     precision=precision, progress=False, on_batch=clock.batch)
    return clock


def _compare_precision(args: argparse.Namespace, images_parquet: Path, work: Path, size: int) -> None:
    """The stage's pipeline at ``precision: fp32`` against ``auto``, alternated over the rounds."""
    from components.features.store import load_features
    from components.train.precision import resolve

    auto = resolve("auto", "cpu")
    print(f"precision auto resolves to {auto} on this CPU")
    kwargs = dict(backbone=args.backbone, size=size, stage=args.stage, grid_size=args.grid_size,
                  batch_size=args.batch_size, threads=args.threads, workers=args.decode_workers, dtype=args.dtype)
    ratios = []
    for r in range(args.rounds):
        clocks, grids = {}, {}
        for precision in ("fp32", "auto"):
            out = work / f"{precision}-{r}"
            out.mkdir()
            clocks[precision] = run_ray(images_parquet, out, precision=precision, **kwargs)
            grids[precision] = load_features(out).grid.astype(np.float32)
            shutil.rmtree(out)
        ratios.append(clocks["auto"].steady_ips / clocks["fp32"].steady_ips)
        scale = float(np.abs(grids["fp32"]).mean())
        diff = float(np.abs(grids["auto"] - grids["fp32"]).mean()) / max(scale, 1e-12)
        print(f"round {r + 1}/{args.rounds}: fp32 {clocks['fp32'].steady_ips:7.1f} images/s, "
              f"auto ({auto}) {clocks['auto'].steady_ips:7.1f} images/s; "
              f"mean |auto - fp32| / mean |fp32| of the grid features: {diff:.4f}")
    print(f"ratio auto/fp32 steady state: {statistics.median(ratios):.3f} "
          f"(median of {args.rounds}: {', '.join(f'{x:.3f}' for x in ratios)}; target >= 1.8)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=2000)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=64, help="side of the generated PNGs")
    parser.add_argument("--stage", type=int, default=4, help="trunk stage, 4: the whole backbone")
    parser.add_argument("--grid-size", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--decode-workers", type=int, default=1,
                        help="DataLoader workers / Ray decode tasks (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of the model process / actor (default: the cores "
                             "left by the decode workers, at least 1)")
    parser.add_argument("--dtype", default="float16", choices=("float16", "float32"))
    parser.add_argument("--rounds", type=int, default=1, help="alternate baseline and Ray this many times")
    parser.add_argument("--precision", action="store_true",
                        help="compare the stage's pipeline at precision fp32 (baseline) and auto instead "
                             "(bf16 autocast on a CPU with AMX / AVX-512 BF16), both under Ray")
    args = parser.parse_args(argv)
    if args.threads is None:
        args.threads = max(1, (os.cpu_count() or 1) - args.decode_workers)

    work = Path(tempfile.mkdtemp(prefix="bench-features-"))
    prepared = PreparedDir(work)  # a stand-in for prepare's folder: the dataset, and an images table of it
    try:
        table = write_images(prepared, num_images=args.num_images, image_size=args.image_size)
        images_parquet = prepared.images

        size = get_spec(args.backbone).resolve_input_size(args.input_size)
        torch.set_num_threads(args.threads)
        model, _ = load_backbone(args.backbone, weights="random", seed=0, grid_size=args.grid_size,
                                 stage=args.stage)
        options = ModelOptions(backbone=args.backbone, grid_size=args.grid_size, stage=args.stage,
                               dtype=args.dtype, device="cpu", threads=args.threads, precision="fp32")
        if args.precision:
            _compare_precision(args, images_parquet, work, size)
            return
        print(f"bench.features: {args.num_images} images {args.image_size} px -> {size} px, {args.backbone} "
              f"(stage {args.stage}), "
              f"batch {args.batch_size}, {args.threads} torch threads + {args.decode_workers} decode "
              f"process(es), {os.cpu_count()} cores")

        ratios = []
        for r in range(args.rounds):
            outs = {name: work / f"{name}-{r}" for name in ("baseline", "ray")}
            for out in outs.values():
                out.mkdir()
            base = run_baseline(table, outs["baseline"], model, options, size=size,
                                batch_size=args.batch_size, workers=args.decode_workers)
            ray_clock = run_ray(images_parquet, outs["ray"], backbone=args.backbone, size=size,
                                stage=args.stage, grid_size=args.grid_size, batch_size=args.batch_size,
                                threads=args.threads, workers=args.decode_workers, dtype=args.dtype)
            same = all((outs["baseline"] / f).read_bytes() == (outs["ray"] / f).read_bytes()
                       for f in os.listdir(outs["baseline"]))
            ratio = ray_clock.steady_ips / base.steady_ips
            ratios.append(ratio)
            tag = f"round {r + 1}/{args.rounds}: " if args.rounds > 1 else ""
            print(f"{tag}baseline (DataLoader + torch): {base.steady_ips:7.1f} images/s steady, "
                  f"start-up {base.startup_s:5.2f} s, total {base.total_s:6.2f} s")
            print(f"{tag}ray data pipeline:              {ray_clock.steady_ips:7.1f} images/s steady, "
                  f"start-up {ray_clock.startup_s:5.2f} s, total {ray_clock.total_s:6.2f} s")
            print(f"{tag}ray start-up cost (cluster{' (first round)' if r == 0 else ' already up'}, actors, "
                  f"model load, first batch): {ray_clock.startup_s:.2f} s "
                  f"(baseline start-up {base.startup_s:.2f} s)")
            print(f"{tag}identical feature shards: {same}")
            shutil.rmtree(outs["baseline"]), shutil.rmtree(outs["ray"])
        each = f" (median of {args.rounds}: {', '.join(f'{x:.3f}' for x in ratios)})" if args.rounds > 1 else ""
        print(f"ratio ray/baseline steady state: {statistics.median(ratios):.3f}{each}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
