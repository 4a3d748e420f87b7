"""DVC stages ``train_<family>``: one training stage for every model family.

    python -m pipelines.train --family vae --params params.yaml --prepared data/prepared \
        --model models/vae --reports reports/vae --metrics metrics/train_vae.json \
        --plots plots/vae.csv --storage ray_results

The family (:mod:`components.families`) says what the stage reads (one
``--<input>`` option per input folder), what it writes besides the model
folder, metrics and curves (one ``--<output>`` option each), and how
(:class:`components.train.family.Family`). The stage itself is the same for
all: the ``train_<family>`` params group; the Ray run named by the loop's
code, the params and the data version, so only an identical run resumes
(after a crash, from its last checkpoint); the loop under Ray Train
(``TorchTrainer``, DDP over ``scaling.num_workers``) inside the stage's
MLflow run, which gets every epoch once; then the family's export of the
final state, the metrics JSON and the curves CSV, all written atomically and
logged to MLflow. Identical runs started at once (two queued experiments)
train one after the other (:func:`run_lock`). A run that fails for good (a non-finite loss after its
restarts) stops the stage with the error and where the last good checkpoint
is.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from components import families, tracking, workspace
from components.config import flatten, to_dict
from components.io import atomic_file, write_json
from components.ray_adapter import init_ray, train_log_dir
from components.train.family import Family, Trained
from components.train.ray_trainer import (
    STORAGE_ENV,
    EpochProgress,
    TrainingFailed,
    fit,
    make_trainer,
    stable_run_name,
)
from pipelines.common import StageFailed, stage_main
from pipelines.config import load_params

log = logging.getLogger("train")


def run_name_of(family: Family, cfg: Any, version: Mapping[str, str]) -> str:
    """The Ray run's identity: the loop's code, the model (if the group has one), train and scaling params,
    the data version."""
    model = to_dict(cfg.model) if hasattr(cfg, "model") else None
    return stable_run_name(family.name, family.loop, model, to_dict(cfg.train), to_dict(cfg.scaling), dict(version))


def build_trainer(family: Family, cfg: Any, *, inputs: Mapping[str, Path], storage: Path, run_name: str,
                  logger: Any, callbacks: Sequence[Any] = (), **hooks: Any):
    """The family's ``TorchTrainer``: the stage and each sweep trial build it here.

    ``hooks`` go into the loop config as they are (tests: ``on_step``).
    """
    return make_trainer(
        family.loop,
        {**family.loop_config(cfg, inputs), **hooks},
        scaling=cfg.scaling,
        cpus_per_worker=cfg.train.threads_per_worker,
        run_name=run_name,
        storage_path=str(storage),
        callbacks=callbacks,
        logger=logger,
        progress=EpochProgress(family.stage, getattr(cfg.train, "epochs", None),
                               family.progress_keys or tuple(k for k in family.curve_keys if k != "epoch")),
    )


def last_checkpoint(storage: Path, run_name: str) -> Path | None:
    """The newest checkpoint folder of a run (``<storage>/<run>/epoch-NNNN``), if any."""
    found = sorted((storage / run_name).glob("epoch-*"))
    return found[-1] if found else None


@contextlib.contextmanager
def run_lock(storage: Path | str, run_name: str) -> Iterator[None]:
    """Hold ``<storage>/<run_name>.lock`` while the run trains: identical runs go one after the other.

    Two DVC experiments at once (``dvc queue start -j 2``) may both need the
    same training run (same code, params and data: one Ray run folder). Run
    together, each one's checkpoint pruning deletes the other's checkpoints;
    in turn, the second resumes the first's finished run and trains nothing.
    Local storage only (a shared URI is the cluster's business).
    """
    if "://" in str(storage):
        yield
        return
    root = Path(workspace.resolve(storage))
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{run_name}.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("%s: an identical run is training; waiting for it to finish", run_name)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def train_on_ray(family: Family, cfg: Any, *, inputs: Mapping[str, Path], storage: Path, run_name: str,
                 logger: Any) -> tuple[dict[str, Any], float]:
    """Run the family's loop under ``TorchTrainer``; return the final state and the seconds.

    Raises:
        StageFailed: the run failed for good (after its restarts); the message
            has the worker's error (e.g. a non-finite loss) and where the last
            good checkpoint is.
    """
    trainer = build_trainer(family, cfg, inputs=inputs, storage=storage, run_name=run_name, logger=logger)
    start = time.perf_counter()
    try:
        state = fit(trainer, logger=logger)
    except TrainingFailed as err:
        kept = last_checkpoint(storage, run_name)
        where = f"last checkpoint on disk: {kept}" if kept else "no checkpoint on disk"
        raise StageFailed(f"{family.name} training failed: {err} [{where}]") from err
    return state, time.perf_counter() - start


def write_curves(path: Path, history: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> None:
    """Per-epoch curves as CSV, for ``dvc plots`` (a missing value is left empty)."""

    def cell(value: Any) -> str:
        if value is None:
            return ""
        return f"{value:.6g}" if isinstance(value, float) else str(value)

    with atomic_file(path) as f:
        f.write(",".join(keys) + "\n")
        for row in history:
            f.write(",".join(cell(row.get(k)) for k in keys) + "\n")


def run(family: Family, cfg: Any, *, inputs: Mapping[str, Path], outputs: Mapping[str, Path], storage: Path,
        params_file: str = "params.yaml") -> dict[str, Any]:
    """Train, then write the family's outputs, the metrics and the curves; return the metrics.

    Args:
        family: The model family.
        cfg: Its ``train_<family>`` params group.
        inputs: Input folders by name (every key of ``family.inputs``).
        outputs: Output paths by name (every key of ``family.default_outputs()``).
        storage: Ray Train's checkpoint folder (relative: from the project root).
        params_file: The params file, hashed into the pipeline run.
    """
    version = family.data_version(inputs)
    run_name = run_name_of(family, cfg, version)
    init_ray()
    with tracking.training_run(family.stage, ray_run=run_name, params=flatten(to_dict(cfg)),
                               params_file=params_file, tags=family.run_tags(inputs, version)) as logger:
        with run_lock(os.environ.get(STORAGE_ENV) or storage, run_name):
            state, seconds = train_on_ray(family, cfg, inputs=inputs, storage=storage, run_name=run_name,
                                          logger=logger)
        log.info("%s: trained %d epochs in %.0f s", family.name, len(state["history"]), seconds)
        metrics = family.export(cfg, state, Trained(run_name, seconds, version, inputs, outputs))
        # what `precision: auto` resolved to on the workers (components.train.precision)
        metrics["precision"] = "bf16" if state["history"] and state["history"][-1].get("bf16_autocast") else "fp32"
        tracking.set_tags({"capsynth.precision": metrics["precision"]})
        write_json(outputs["metrics"], metrics)
        write_curves(outputs["plots"], state["history"], family.curve_keys)
        tracking.log_metrics({k: v for k, v in metrics.items()
                              if isinstance(v, (int, float)) and not isinstance(v, bool)})
        tracking.log_artifacts(dict(outputs))
        # Ray Train's own logs, every level (the console shows warnings only): the stage's Ray
        # instance is its own, so the session's files are this run's
        if (ray_logs := train_log_dir()) is not None and not os.environ.get("RAY_ADDRESS"):
            tracking.log_artifacts({"logs/ray_train": ray_logs})
    log.info("%s: wrote %s", family.stage, ", ".join(str(p) for p in outputs.values()))
    return metrics


def parse_args(argv: list[str] | None) -> tuple[Family, argparse.Namespace]:
    """``--family NAME`` first, then that family's options: params, inputs, outputs, storage."""
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--family", choices=families.names(), required=True)
    known, rest = first.parse_known_args(argv)
    family = families.get(known.family)
    parser = argparse.ArgumentParser(prog=f"capsynth {family.stage}",
                                     description=f"train the {family.name} (python -m pipelines.train --family "
                                                 f"{family.name})")
    parser.add_argument("--params", default="params.yaml")
    for name, default in {**family.inputs, **family.default_outputs()}.items():
        parser.add_argument(f"--{name}", type=Path, default=Path(default), help=f"default: {default}")
    parser.add_argument("--storage", type=Path, default=Path("ray_results"), help="Ray Train checkpoints")
    return family, parser.parse_args(rest)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    family, args = parse_args(argv)

    @stage_main(family.stage)
    def _main() -> None:
        cfg = getattr(load_params(args.params), family.stage)
        metrics = run(family, cfg, inputs={k: getattr(args, k) for k in family.inputs},
                      outputs={k: getattr(args, k) for k in family.default_outputs()}, storage=args.storage,
                      params_file=args.params)
        log.info("%s: %s", family.stage, {k: round(v, 4) for k, v in metrics.items()
                                          if isinstance(v, float) and not k.endswith("_seconds")})

    _main()


if __name__ == "__main__":
    main()
