"""Benchmark: throughput and memory against the number of images N and of workers.

    .venv/bin/python -m bench.scaling                       # N 1k, 6k, 24k; 1 and 2 workers (~35 min, 2 cores)
    .venv/bin/python -m bench.scaling --sizes 1000 --workers 1
    .venv/bin/python -m bench.scaling --dry                 # tiny sizes, 1 epoch: checks the script (CI runs it)
    .venv/bin/python -m bench.scaling --load-only           # only the load rows, on random features (~1 min)

One set of synthetic scenes (the demo dataset's generator, 64 px PNGs) is
generated for the largest N; each N takes its first N images. For each N:

``features``   the features stage's pipeline (``extract_features``, Ray Data) with
               params.yaml's ``features`` (the demo's defaults), ``workers`` model
               actors: steady-state images/s (the middle 80% of the images, as
               ``bench.features`` measures it).
``captioner``  ``fit_captioner`` under Ray Train with ``workers`` DDP workers on
               in-memory features of the demo's shape and synthetic captions
               (``bench.captioner``'s data): captions/s of the training steps,
               the epochs after the first (all of them with ``--epochs 1``).
``vae``        ``fit_vae`` the same way on the N images: training images/s.
``load``       ``load_features`` of the N images' features in a fresh process: the
               peak RSS (``VmHWM``, reset just before the call) above the RSS before
               it, against the README's formula ``N x (grid_size**2 + 1) x C x
               bytes(dtype) + 8N``. The peak counts the Parquet decoding's buffers
               and the file's pages it reads, not only the arrays. With ``--load-only``
               the stores hold random values of params.yaml's features shape, written
               by the stage's ``ShardWriter`` (the same shards, no model, no Ray).

Training workers get ``cores // workers`` torch threads each, so every run
uses the whole machine: on 2 cores, 2 workers run 1 thread each. The
features' actors keep params.yaml's threads and decode tasks, so 2 actors are
one process more than the cores of a 2-core machine. Rates of 2 workers are
totals over the workers. ``wall s`` is the whole run, start-up included.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.captioner.__main__ import _ray_loop as captioner_loop
from bench.captioner.__main__ import _setup as captioner_setup
from bench.captioner.__main__ import _steady as captioner_steady
from bench.features.__main__ import _Clock, write_images
from bench.generative.__main__ import _ray_loop as generative_loop
from bench.generative.__main__ import scenes, steady
from components.data.folders import PreparedDir
from components.features.extract import extract_features
from components.features.backbones import get_spec
from components.features.store import DTYPES, LAYOUT, ShardWriter, features_table, write_meta
from components.generative.data import load_images
from components.ray_adapter import PROJECT_ROOT, init_ray
from components.train.config import ScalingParams
from components.train.precision import resolve
from components.train.ray_trainer import fit, make_trainer
from pipelines.config import load_params

SIZES = {"full": [1000, 6000, 24000], "dry": [128, 256]}  # dry: 2 and 4 batches of 64, for a steady window
EPOCHS = {"full": 2, "dry": 1}

# In a fresh interpreter, so that the peak is this load's alone. The peak RSS (VmHWM) is reset to the
# RSS just before the load; pyarrow.dataset, which the first read imports, is imported before that.
_LOAD = r"""
import json, re, sys
import pyarrow.dataset
from components.features.store import load_features

def rss(field):
    return int(re.search(rf"^{field}:\s+(\d+) kB", open("/proc/self/status").read(), re.M).group(1)) * 1024

with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = rss("VmRSS")
features = load_features(sys.argv[1])
print(json.dumps({"rows": len(features), "peak_bytes": rss("VmHWM") - before}))
"""


def predicted_bytes(meta: dict[str, Any]) -> int:
    """README §Features: ``N x (grid_size**2 + 1) x C x bytes(dtype) + 8N``."""
    n, g, c = meta["num_images"], meta["grid_size"], meta["channels"]
    return n * (g * g + 1) * c * DTYPES[meta["dtype"]].byte_width + 8 * n


def load_peak_bytes(features_dir: Path, rows: int) -> int:
    """Peak RSS that ``load_features(features_dir)`` adds to a fresh process (Linux: /proc)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(PROJECT_ROOT), os.environ.get("PYTHONPATH"))))}
    done = subprocess.run([sys.executable, "-c", _LOAD, str(features_dir)], env=env, capture_output=True, text=True,
                          check=True)
    result = json.loads(done.stdout)
    if result["rows"] != rows:
        raise RuntimeError(f"load_features read {result['rows']} rows of {features_dir}, expected {rows}")
    return result["peak_bytes"]


def random_features(out: Path, n: int, cfg: Any) -> None:
    """A features store of ``n`` rows of random values, of the shape and dtype ``cfg`` (params.yaml's ``features``)
    gives, written by the stage's writer: the same shards and the meta.json fields ``load_features`` reads."""
    c, g = get_spec(cfg.backbone).stage_channels(cfg.stage), cfg.grid_size
    out.mkdir()
    writer = ShardWriter(out, channels=c, grid_size=g, dtype=cfg.dtype)
    rng = np.random.default_rng(0)
    for start in range(0, n, 1024):
        grid = rng.standard_normal((min(1024, n - start), g * g, c), dtype=np.float32).astype(cfg.dtype)
        writer.write(features_table(np.arange(start, start + len(grid)), grid, grid.mean(axis=1).astype(cfg.dtype)))
    write_meta(out, {"backbone": cfg.backbone, "stage": cfg.stage, "weights": "random values", "grid_size": g,
                     "channels": c, "dtype": cfg.dtype, "num_images": n, "layout": LAYOUT, "shards": writer.close()})


def bench_features(images: Path, out: Path, cfg: Any, actors: int) -> tuple[float, float]:
    """The stage's call with ``actors`` model actors: steady images/s and the wall time."""
    out.mkdir()
    clock = _Clock()
    extract_features(images, out, **{**dataclasses.asdict(cfg), "num_actors": actors}, progress=False,
                     on_batch=clock.batch)
    return clock.steady_ips, clock.total_s


def bench_train(loop, config: dict[str, Any], *, workers: int, threads: int, name: str,
                storage: Path) -> tuple[list[dict], float]:
    """``loop`` under TorchTrainer with ``workers`` CPU workers: the history and the wall time."""
    trainer = make_trainer(loop, config, scaling=ScalingParams(num_workers=workers, use_gpu=False, max_failures=0),
                           cpus_per_worker=threads, run_name=name, storage_path=str(storage))
    start = time.perf_counter()
    history = fit(trainer)["history"]
    return history, time.perf_counter() - start


def format_table(header: list[str], rows: list[list[str]], left: tuple[str, ...] = ("part", "unit")) -> str:
    """Plain text columns: the ``left`` ones left-aligned, the figures right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) if name in left else cell.rjust(w)
                               for name, cell, w in zip(header, r, widths)).rstrip()
                     for r in [header, *rows])


Row = list[str]  # part, N, workers, threads, rate, unit, wall s, peak MB, formula MB, ratio
HEADER = ["part", "N", "workers", "threads", "rate", "unit", "wall s", "peak MB", "formula MB", "ratio"]


def _row(part: str, n: int, workers: str, threads: str, rate: str, unit: str, wall: str, peak: str = "",
         formula: str = "", ratio: str = "") -> Row:
    """One row of the table, also printed at once: a full run takes half an hour."""
    row = [part, f"{n}", workers, threads, rate, unit, wall, peak, formula, ratio]
    print("  " + "  ".join(filter(None, row)), file=sys.stderr, flush=True)
    return row


def run_features(table: pa.Table, work: Path, cfg: Any, sizes: list[int], workers: list[int]) -> list[Row]:
    """Features of the first N images with each number of actors; the first count's output is kept for ``load``."""
    rows = []
    for n in sizes:
        images = work / f"images-{n}.parquet"
        pq.write_table(table.slice(0, n), images)
        for w in workers:
            out = work / f"features-{n}-{w}"
            ips, wall = bench_features(images, out, cfg, w)
            rows.append(_row("features", n, f"{w}", f"{cfg.threads_per_actor}", f"{ips:.1f}", "images/s",
                             f"{wall:.1f}"))
            if w != workers[0]:
                shutil.rmtree(out)
    return rows + run_load({n: work / f"features-{n}-{workers[0]}" for n in sizes})


def run_load(folders: dict[int, Path]) -> list[Row]:
    """The load row of each features store (N -> folder)."""
    rows = []
    for n, folder in folders.items():
        peak, formula = load_peak_bytes(folder, n), predicted_bytes(json.loads((folder / "meta.json").read_text()))
        rows.append(_row("load", n, "-", "-", "-", "-", "-", f"{peak / 1e6:.1f}", f"{formula / 1e6:.1f}",
                         f"{peak / formula:.2f}"))
    return rows


def run_training(table: pa.Table, work: Path, params: Any, params_file: str, sizes: list[int],
                 threads: dict[int, int], epochs: int) -> list[Row]:
    """The captioner, then the VAE, for each N and number of workers (``threads``: workers -> threads each)."""
    rows = []
    captioner = {w: captioner_setup(argparse.Namespace(params=params_file, epochs=epochs, threads=t),
                                    params.train_captioner.train.precision) for w, t in threads.items()}
    for n in sizes:
        for w in threads:
            model, cfg, shape = captioner[w]
            history, wall = bench_train(captioner_loop, {"num_images": n, "shape": shape, "model": model, "train": cfg},
                                        workers=w, threads=threads[w], name=f"captioner-{n}-{w}", storage=work)
            rows.append(_row("captioner", n, f"{w}", f"{threads[w]}", f"{captioner_steady(history):.1f}",
                             "captions/s", f"{wall:.1f}"))

    vae = params.train_vae
    # as bench.generative: diagnostics on 64 samples, no IWAE bound (a last-epoch cost, not throughput)
    vae_cfg = {w: dataclasses.replace(vae.train, epochs=epochs, threads_per_worker=threads[w], num_samples=64,
                                      iw_samples=0, fail_at_epoch=-1) for w in threads}
    images = load_images(table.column("path").to_pylist(), size=vae.model.image_size, num_workers=os.cpu_count() or 1)
    val = scenes(64, vae.model.image_size, seed=1)
    for n in sizes:
        for w in threads:
            config = {"kind": "vae", "train_images": images[:n], "val_images": val, "model": vae.model,
                      "train": vae_cfg[w]}
            history, wall = bench_train(generative_loop, config, workers=w, threads=threads[w], name=f"vae-{n}-{w}",
                                        storage=work)
            rates = [h["train_images_per_s"] for h in history]
            rows.append(_row("vae", n, f"{w}", f"{threads[w]}", f"{steady(rates):.1f}", "images/s", f"{wall:.1f}"))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", help=f"numbers of images (default: {SIZES['full']})")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="model actors (features) and DDP workers (training) (default: %(default)s)")
    parser.add_argument("--epochs", type=int, help=f"training epochs per run (default: {EPOCHS['full']})")
    parser.add_argument("--params", default="params.yaml", help="the demo's params: features, captioner and VAE")
    parser.add_argument("--dry", action="store_true",
                        help=f"sizes {SIZES['dry']}, {EPOCHS['dry']} epoch: checks the script, not the speed")
    parser.add_argument("--load-only", action="store_true",
                        help="only the load rows, on stores of random features of params.yaml's features shape")
    args = parser.parse_args(argv)
    mode = "dry" if args.dry else "full"
    sizes, epochs = args.sizes or SIZES[mode], args.epochs or EPOCHS[mode]
    cores = os.cpu_count() or 1
    threads = {w: max(1, cores // w) for w in args.workers}  # training: the whole machine, split over the workers
    params = load_params(args.params)
    feats = params.features

    print("$ .venv/bin/python -m bench.scaling " + shlex.join(sys.argv[1:] if argv is None else argv))
    print(f"{cores} cores; features: {feats.backbone} stage {feats.stage}, {feats.input_size} px, grid "
          f"{feats.grid_size}, {feats.dtype}, precision {feats.precision} ({resolve(feats.precision, 'cpu')}); "
          f"training: {epochs} epoch(s), captioner precision {params.train_captioner.train.precision}, "
          f"VAE precision {params.train_vae.train.precision}", flush=True)
    load_note = ("load: the peak RSS load_features adds to a fresh process, the README formula "
                 "N x (grid_size^2 + 1) x C x bytes + 8N, and peak / formula (MB = 1e6 bytes).")
    if args.load_only:
        with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
            folders = {n: Path(tmp) / f"features-{n}" for n in sizes}
            for n, folder in folders.items():
                random_features(folder, n, feats)
            rows = run_load(folders)
        print(format_table(HEADER, rows))
        print(f"{load_note} Random features of the shape above, written by the stage's ShardWriter.")
        return
    init_ray(num_cpus=max(cores, max(args.workers) * feats.threads_per_actor + feats.num_decode_tasks))
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp:
        work = Path(tmp)
        table = write_images(PreparedDir(work / "images"), num_images=max(sizes), image_size=64)
        rows = run_features(table, work, feats, sizes, args.workers)
        rows += run_training(table, work, params, args.params, sizes, threads, epochs)

    print(format_table(HEADER, rows))
    print(f"workers: model actors (features) or DDP workers (training); rates are totals over them, wall s "
          f"includes start-up.\n"
          f"threads: torch threads per worker. Training splits the {cores} cores: "
          f"{', '.join(f'{w} worker(s) x {t} thread(s)' for w, t in threads.items())}. Each feature actor has "
          f"{feats.threads_per_actor} thread(s), beside {feats.num_decode_tasks} decode task(s) (params.yaml).\n"
          + load_note)


if __name__ == "__main__":
    main()
