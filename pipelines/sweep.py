"""``capsynth sweep captioner|vae|gan``: a Ray Tune search over a training stage's params.

    python -m pipelines.cli sweep captioner --params params.yaml \
        --prepared data/prepared --features data/features \
        --storage ray_results --out reports/sweep_captioner.json

Each trial trains the stage's own ``TorchTrainer`` (``pipelines.train.build_trainer``
with the family's spec, so scaling, storage and failure handling are the stage's), with
the stage's params changed at the keys of ``sweep.<family>.space``. Ray Train
reports every epoch to Tune (``TuneReportCallback``); the ASHA scheduler stops
poor trials at its rungs. Trials run as many at once as the cluster holds with
each trial's workers (``max_concurrent: 0``), so a 2-CPU machine never waits on
itself.

MLflow: one ``sweep_<family>`` run (nested in the pipeline run) with a child
run per trial (its params, per-epoch metrics, and whether ASHA stopped it).
The best config is printed and written to ``--out`` (a JSON summary) and beside
it as ``<out>.txt``, the ``-S`` arguments for ``dvc exp run $(cat ...)``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from components import families, tracking
from components.config import ConfigError, build, flatten, to_dict
from components.io import atomic_file, write_json
from components.ray_adapter import cluster_resources, init_ray
from components.train.tune import TRIAL_CPU, TuneSpec, run_trials
from pipelines import train
from pipelines.common import StageFailed, stage_main
from pipelines.config import SearchDim, SweepFamilyConfig, load_params, set_arg

log = logging.getLogger("sweep")

@dataclasses.dataclass(frozen=True)
class SweepJob:
    """What every trial needs, picklable: the base config and a trainer factory bound to the data."""

    family: str
    base: Any  # the stage's config dataclass (CaptionerParams, ...)
    build_trainer: Callable[..., Any]  # (stage config, *, run_name, callbacks) -> TorchTrainer


def check_space(space: dict[str, SearchDim], base: Any, group: str) -> None:
    """Every searched key must be a param of the stage's group (a typo names the key)."""
    known = flatten(to_dict(base))
    for key in space:
        if key not in known:
            close = sorted(k for k in known if k.split(".")[-1] == key.split(".")[-1])
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"sweep space: '{key}' is not a param of {group}{hint}")


def apply_overrides(base: Any, overrides: dict[str, Any], group: str) -> Any:
    """``base`` with dotted keys replaced, rebuilt strictly (a value of the wrong type names its key)."""
    data = to_dict(base)
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            node = node[part]
        node[leaf] = value
    return build(type(base), data, source="sweep trial", prefix=group)


def trials_at_once(sweep: SweepFamilyConfig, base: Any, resources: dict[str, float]) -> int:
    """``max_concurrent`` or, when 0, as many trials as the cluster holds at once.

    A trial holds :data:`TRIAL_CPU` for its own process plus its Ray Train
    workers' CPUs (and GPUs), so 2 CPUs run one 1-worker trial at a time.

    Raises:
        ConfigError: one trial alone needs more than the cluster has (it would wait forever).
    """
    use_gpu = bool(base.scaling.use_gpu) or (base.scaling.use_gpu is None and resources.get("GPU", 0) > 0)
    need_cpu = base.scaling.num_workers * base.train.threads_per_worker + TRIAL_CPU
    fits = int(resources.get("CPU", 0) / need_cpu + 1e-9)
    if use_gpu:
        fits = min(fits, int(resources.get("GPU", 0)) // base.scaling.num_workers)
    if fits < 1:
        raise ConfigError(f"one trial needs {need_cpu:g} CPU{' and GPUs' if use_gpu else ''} (scaling.num_workers x "
                          f"train.threads_per_worker, + {TRIAL_CPU} for the trial) but the cluster has "
                          f"{resources.get('CPU', 0):g} CPU, {resources.get('GPU', 0):g} GPU: lower "
                          "scaling.num_workers or train.threads_per_worker of the stage")
    return min(sweep.max_concurrent or fits, fits, sweep.num_samples)


def _trial_trainer(config: dict[str, Any], *, run_name: str, callbacks: list[Any], job: SweepJob) -> Any:
    """The trainer of one trial: the stage's config changed at the trial's keys, the stage's factory."""
    cfg = apply_overrides(job.base, config, families.get(job.family).stage)
    return job.build_trainer(cfg, run_name=f"{job.family}-{run_name}", callbacks=callbacks)


def make_job(family: str, base: Any, *, inputs: dict[str, Path], storage: Path) -> SweepJob:
    """Bind the stage's ``build_trainer`` to the family and its data (absolute paths: trials run elsewhere)."""
    build_fn = functools.partial(train.build_trainer, families.get(family),
                                 inputs={name: path.resolve() for name, path in inputs.items()}, storage=storage,
                                 logger=None)
    return SweepJob(family, base, build_fn)


def run(family: str, *, params_file: str, inputs: dict[str, Path], storage: Path, out: Path) -> dict:
    """Run the sweep; log the trials; write and return the summary with the best config.

    Args:
        family: A registered model family (:mod:`components.families`).
        params_file: ``params.yaml``: the family's stage params and ``sweep.<family>``.
        inputs: The family's input folders by name (``prepared``, ``features``...).
        storage: Where the sweep's folder goes (trial checkpoints, Tune's state).
        out: The summary JSON.
    """
    params = load_params(params_file)
    group = families.get(family).stage
    if family not in params.sweep:
        raise ConfigError(f"{params_file}: no 'sweep.{family}' group: give the family a search space to sweep")
    sweep, base = params.sweep[family], getattr(params, group)
    check_space(sweep.space, base, group)
    init_ray()  # with the dashboard: its State API cleans up after trials that ASHA stops (see init_ray)
    at_once = trials_at_once(sweep, base, cluster_resources())
    storage = storage.resolve()
    name = f"sweep-{family}-{time.strftime('%Y%m%d-%H%M%S')}"
    job = make_job(family, base, inputs=inputs, storage=storage / name / "train")
    spec = TuneSpec(metric=sweep.metric, mode=sweep.mode, num_samples=sweep.num_samples, at_once=at_once,
                    max_epochs=base.train.epochs, grace_period=sweep.grace_period,
                    reduction_factor=sweep.reduction_factor, seed=sweep.seed, name=name, storage_path=str(storage))
    log.info("%s: %d trials, %d at once, ASHA on %s (%s)", name, sweep.num_samples, at_once, sweep.metric,
             sweep.mode)
    with tracking.stage_run(f"sweep_{family}", params=flatten({"sweep": to_dict(sweep), group: to_dict(base)}),
                            params_file=params_file, tags={"capsynth.sweep": name}) as sweep_run:
        start = time.perf_counter()
        outcomes = run_trials(functools.partial(_trial_trainer, job=job), sweep.space, spec)
        seconds = time.perf_counter() - start
        trials = [_log_trial(sweep_run, outcome, sweep, base, family) for outcome in outcomes]
        best = best_trial(trials, sweep.metric, sweep.mode)
        if best is None:
            raise StageFailed(f"sweep {name}: no trial reported a finite {sweep.metric}")
        overrides = {f"{group}.{k}": v for k, v in best["config"].items()}
        summary = {"family": family, "sweep": name, "metric": sweep.metric, "mode": sweep.mode,
                   "best_value": best[sweep.metric], "best_trial": best["trial"],
                   "best_config": overrides, "set_args": [set_arg(k, v) for k, v in overrides.items()],
                   "trials_at_once": at_once, "seconds": round(seconds, 1), "mlflow_run_id": sweep_run,
                   "trials": trials}
        tracking.log_metrics({f"best_{sweep.metric}": summary["best_value"], "sweep_seconds": seconds})
        write_json(out, summary)
        with atomic_file(out.with_suffix(".txt")) as f:
            f.write(" ".join(f"-S {arg}" for arg in summary["set_args"]) + "\n")
        tracking.log_artifacts({"sweep": out})
    return summary


def best_trial(trials: list[dict], metric: str, mode: str) -> dict | None:
    """The best trial by the last value of ``metric``, among those that ran the most epochs.

    A trial ASHA stopped after one epoch is not compared with the survivors'
    values after all of them (an early value may look better than a final one).
    """
    scored = [t for t in trials if not t["error"] and t[metric] is not None and math.isfinite(t[metric])]
    if not scored:
        return None
    longest = max(t["epochs"] for t in scored)
    finalists = [t for t in scored if t["epochs"] == longest]
    return (max if mode == "max" else min)(finalists, key=lambda t: t[metric])


def _log_trial(sweep_run: str, outcome: dict[str, Any], sweep: SweepFamilyConfig, base: Any, family: str) -> dict:
    """One trial as a child MLflow run; its line of the summary."""
    history, error = outcome["history"], outcome["error"]
    last = history[-1].get(sweep.metric) if history else None
    stopped_early = error is None and len(history) < base.train.epochs
    tracking.log_child_run(
        sweep_run, f"{family}-{outcome['trial']}", params=outcome["config"], history=history,
        failed=error is not None,
        tags={"capsynth.trial": outcome["trial"], "capsynth.stopped_early": str(stopped_early),
              "capsynth.error": error or ""})
    return {"trial": outcome["trial"], "config": outcome["config"], sweep.metric: last, "epochs": len(history),
            "stopped_early": stopped_early, "error": error is not None}


@stage_main("sweep")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="capsynth sweep", description=__doc__.splitlines()[0])
    parser.add_argument("family", choices=families.names())
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--storage", type=Path, default=Path("ray_results"))
    parser.add_argument("--out", type=Path, help="summary JSON (default: reports/sweep_<family>.json)")
    known, _ = parser.parse_known_args(argv)
    for name, default in families.get(known.family).inputs.items():  # the family's input folders
        parser.add_argument(f"--{name}", type=Path, default=Path(default), help=f"default: {default}")
    args = parser.parse_args(argv)
    out = args.out or Path(f"reports/sweep_{args.family}.json")
    inputs = {name: getattr(args, name) for name in families.get(args.family).inputs}
    summary = run(args.family, params_file=args.params, inputs=inputs, storage=args.storage, out=out)
    print(f"best {summary['metric']} = {summary['best_value']:.4g} ({summary['best_trial']}); run it with:")
    print("dvc exp run " + " ".join(f"-S {arg}" for arg in summary["set_args"]))
    print(f"wrote {out} and {out.with_suffix('.txt')}", file=sys.stderr)


if __name__ == "__main__":
    main()
