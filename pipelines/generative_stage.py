"""What the ``train_vae`` and ``train_gan`` stages share: image splits, the Ray run, outputs.

Not a stage itself: the two stage modules call these helpers so that reading
the images table, naming and running the Ray Train run, reporting a diverged
run, and writing curves and PNGs are written once.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image

from components import tracking
from components.config import flatten, to_dict
from components.data.folders import PreparedDir
from components.generative.data import load_images
from components.io import atomic_file, short_sha256, write_json
from components.train.ray_trainer import ScalingSpec, TrainingFailed, fit, make_trainer, stable_run_name
from pipelines.common import StageFailed


def image_splits(prepared: Path) -> dict[str, list[str]]:
    """Absolute image paths per split from ``<prepared>/images.parquet`` (train and val required).

    Relative paths in the table are relative to the working directory (as the
    ``prepare`` stage writes them), so the Ray workers get absolute ones.
    """
    images = PreparedDir(prepared).images
    table = pq.read_table(images, columns=["path", "split"]).to_pydict()
    splits: dict[str, list[str]] = {}
    for path, split in zip(table["path"], table["split"]):
        splits.setdefault(split, []).append(path if "://" in path else os.path.abspath(path))
    for needed in ("train", "val"):
        if not splits.get(needed):
            raise FileNotFoundError(f"{images} has no '{needed}' images "
                                    f"(splits: {', '.join(sorted(splits)) or 'none'})")
    return splits


def data_hash(prepared: Path) -> str:
    """Short hash of the images table: part of the run name and an MLflow tag."""
    return short_sha256(PreparedDir(prepared).images)


def eval_images(splits: dict[str, list[str]], size: int, threads: int = 2) -> tuple[str, torch.Tensor]:
    """The held-out images of the final metrics: test, or val when there is no test split."""
    name = "test" if splits.get("test") else "val"
    return name, load_images(splits[name], size=size, num_workers=threads)


def last_checkpoint(storage: Path, run_name: str) -> Path | None:
    """The newest checkpoint folder of a run (``<storage>/<run>/epoch-NNNN``), if any."""
    found = sorted((storage / run_name).glob("epoch-*"))
    return found[-1] if found else None


def build_trainer(loop: Callable[[dict], None], cfg: Any, *, paths: dict[str, list[str]], storage: Path,
                  run_name: str, logger: Any, callbacks: Sequence[Any] = (), **hooks: Any):
    """The VAE's or GAN's ``TorchTrainer``: the stages and each sweep trial build it here.

    ``hooks`` go into the loop config as they are (tests: the GAN's ``on_step``).
    """
    return make_trainer(
        loop,
        {"paths": {"train": paths["train"], "val": paths["val"]}, "model": cfg.model, "train": cfg.train, **hooks},
        scaling=ScalingSpec.from_params(cfg.scaling, cfg.train.threads_per_worker),
        run_name=run_name,
        storage_path=str(storage),
        callbacks=callbacks,
        logger=logger,
    )


def run_name_of(family: str, loop: Callable[[dict], None], cfg: Any, data_version: str) -> str:
    """The Ray run's identity: the loop's code, the model, train and scaling params, the data version."""
    return stable_run_name(family, loop, to_dict(cfg.model), to_dict(cfg.train), to_dict(cfg.scaling), data_version)


@contextlib.contextmanager
def stage_run(stage: str, family: str, loop: Callable[[dict], None], cfg: Any, *, data_version: str,
              params_file: str) -> Iterator[tuple[str, tracking.RunLogger]]:
    """The stage's MLflow run (continued when an identical run's driver was killed); yields the Ray run
    name and the :class:`~components.tracking.RunLogger` of its epochs."""
    run_name = run_name_of(family, loop, cfg, data_version)
    params = flatten(to_dict(cfg))
    with tracking.training_run(stage, ray_run=run_name, params=params, params_file=params_file,
                               tags={"data_hash": data_version}) as logger:
        yield run_name, logger


def train_on_ray(family: str, loop: Callable[[dict], None], cfg: Any, *, paths: dict[str, list[str]],
                 data_version: str, storage: Path, logger: Any) -> tuple[dict[str, Any], str, float]:
    """Run ``loop`` under ``TorchTrainer``; return the final state, the run name and the seconds.

    The run name is the run's identity (:func:`run_name_of`: code, params,
    data), so a rerun of an identical run resumes from its last checkpoint.

    Raises:
        StageFailed: the run failed for good (after its restarts); the message
            has the worker's error (e.g. a non-finite loss) and where the last
            good checkpoint is.
    """
    run_name = run_name_of(family, loop, cfg, data_version)
    trainer = build_trainer(loop, cfg, paths=paths, storage=storage, run_name=run_name, logger=logger)
    start = time.perf_counter()
    try:
        state = fit(trainer, logger=logger)
    except TrainingFailed as err:
        kept = last_checkpoint(storage, run_name)
        where = f"last checkpoint on disk: {kept}" if kept else "no checkpoint on disk"
        raise StageFailed(f"{family} training failed: {err} [{where}]") from err
    return state, run_name, time.perf_counter() - start


# a metric named so measures wall-clock time or speed: the only figures two runs of the same seed on one machine may
# differ in; they stay out of model folders, whose bytes are the run's identity for DVC and the registry
WALL_CLOCK_SUFFIXES = ("_seconds", "_per_s", "_start_time")


def without_wall_clock(metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` less its wall-clock figures (see :data:`WALL_CLOCK_SUFFIXES`)."""
    return {k: v for k, v in metrics.items() if not k.endswith(WALL_CLOCK_SUFFIXES)}


def steady_images_per_s(history: Sequence[dict[str, float]]) -> float:
    """Mean training images/s over the epochs after the first (all of them if only one)."""
    rates = [row["train_images_per_s"] for row in history]
    rates = rates[1:] or rates
    return float(np.mean(rates)) if rates else float("nan")


def write_curves(path: Path, history: Sequence[dict[str, float]], keys: Sequence[str]) -> None:
    """Per-epoch curves as CSV, for ``dvc plots`` (a missing value is left empty)."""

    def cell(value: Any) -> str:
        if value is None:
            return ""
        return f"{value:.6g}" if isinstance(value, float) else str(value)

    with atomic_file(path) as f:
        f.write(",".join(keys) + "\n")
        for row in history:
            f.write(",".join(cell(row.get(k)) for k in keys) + "\n")


def save_png(path: Path, image: Image.Image) -> None:
    """Write a PIL image as PNG (callers write inside an ``atomic_dir``)."""
    image.save(path, format="PNG")


def interleave(*rows: np.ndarray, per_row: int = 8) -> np.ndarray:
    """Images of several equal-length sets, row by row: ``a[0:8], b[0:8], a[8:16], b[8:16], ...``.

    Args:
        rows: uint8 ``(N, H, W, 3)`` each, same ``N`` (a multiple of ``per_row``).
        per_row: Images per grid row.

    Returns:
        np.ndarray: uint8 ``(len(rows) * N, H, W, 3)`` for ``image_grid(nrow=per_row)``.
    """
    n = rows[0].shape[0]
    chunks = [r[i:i + per_row] for i in range(0, n, per_row) for r in rows]
    return np.concatenate(chunks)


def parse_args(family: str, description: str, argv: list[str] | None) -> argparse.Namespace:
    """The command line of ``train_<family>``: params file, input and output paths (defaults as in dvc.yaml)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    parser.add_argument("--out", type=Path, default=Path(f"models/{family}"))
    parser.add_argument("--reports", type=Path, default=Path(f"reports/{family}"))
    parser.add_argument("--metrics", type=Path, default=Path(f"metrics/train_{family}.json"))
    parser.add_argument("--plots", type=Path, default=Path(f"plots/{family}.csv"))
    parser.add_argument("--storage", type=Path, default=Path("ray_results"))
    return parser.parse_args(argv)


def finish(metrics: dict[str, Any], history: Sequence[dict[str, float]], curve_keys: Sequence[str], *,
           out: Path, reports: Path, metrics_path: Path, plots_path: Path) -> None:
    """Write the training summary and the curves, then log both and the folders to the stage's MLflow run."""
    write_json(metrics_path, metrics)
    write_curves(plots_path, history, curve_keys)
    tracking.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
    tracking.log_artifacts({"model": out, "reports": reports, "plots": plots_path, "metrics": metrics_path})
