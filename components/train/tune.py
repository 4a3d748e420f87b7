"""Ray Tune over the project's ``TorchTrainer`` factory: the Ray side of ``capsynth sweep``.

A trial is a function trainable that builds one ``TorchTrainer`` (with
``TuneReportCallback``, so every ``ray.train.report`` of rank 0 reaches Tune)
and runs it with :func:`components.train.ray_trainer.fit`. ASHA stops poor
trials at its rungs; the search algorithm limits how many run at once. Results
come back as plain dicts (config, per-epoch history, error), so the caller logs
and ranks them without touching Ray.

Ray Train V2 runs each trial's training in a controller actor that the trial
owns; when ASHA stops a trial, both die, and Train's placement-group cleaner
frees the workers' resources through the State API: the local instance needs
its dashboard, which ``init_ray`` starts by default.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from components.train.ray_trainer import fit

# CPUs of a trial's own process: it only waits on its Ray Train workers, which reserve the rest
TRIAL_CPU = 0.1
# keys of a Tune result that are not the training loop's own metrics
_NOT_METRICS = {"done", "trial_id", "checkpoint_path", "epoch", "epoch_start_time", "should_checkpoint"}


@dataclasses.dataclass(frozen=True)
class TuneSpec:
    """How to search: the objective, the budget, ASHA's rungs, concurrency, where results go."""

    metric: str
    mode: str  # max | min
    num_samples: int
    at_once: int
    max_epochs: int
    grace_period: int
    reduction_factor: int
    seed: int
    name: str
    storage_path: str


def search_space(space: Mapping[str, Any]) -> dict[str, Any]:
    """Tune samplers from ``{key: dim}``, each dim with ``type`` (choice | uniform | loguniform),
    ``values`` or ``low`` / ``high``."""
    from ray import tune

    def sampler(dim: Any) -> Any:
        if dim.type == "choice":
            return tune.choice(list(dim.values))
        return (tune.loguniform if dim.type == "loguniform" else tune.uniform)(dim.low, dim.high)

    return {key: sampler(dim) for key, dim in space.items()}


def _trial(config: dict[str, Any], *, trainer_for: Callable[..., Any]) -> None:
    """One trial: ``trainer_for(config, run_name=..., callbacks=...)`` trained to the end (or ASHA's stop)."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    run_name = f"trial-{tune.get_context().get_trial_id()}"
    fit(trainer_for(config, run_name=run_name, callbacks=[TuneReportCallback()]))


def run_trials(trainer_for: Callable[..., Any], space: Mapping[str, Any], spec: TuneSpec) -> list[dict[str, Any]]:
    """Search ``space`` with ASHA; return one dict per trial.

    Args:
        trainer_for: Picklable ``(config, *, run_name, callbacks) -> TorchTrainer``;
            ``config`` is the trial's sample of ``space``.
        space: ``{key: dim}`` (see :func:`search_space`).
        spec: Objective, budget and concurrency.

    Returns:
        ``[{"trial", "config", "history", "error"}]``: ``history`` has one row
        per reported epoch (``step`` = epoch, the loop's numeric metrics);
        ``error`` is the first line of the trial's error, or None.
    """
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    trainable = tune.with_resources(tune.with_parameters(_trial, trainer_for=trainer_for), {"cpu": TRIAL_CPU})
    tuner = tune.Tuner(
        trainable,
        param_space=search_space(space),
        tune_config=tune.TuneConfig(
            metric=spec.metric, mode=spec.mode, num_samples=spec.num_samples,
            scheduler=ASHAScheduler(time_attr="training_iteration", max_t=spec.max_epochs,
                                    grace_period=min(spec.grace_period, spec.max_epochs),
                                    reduction_factor=spec.reduction_factor),
            # the concurrency limit belongs to the search algorithm (Tune ignores
            # max_concurrent_trials next to a BasicVariantGenerator)
            search_alg=BasicVariantGenerator(random_state=spec.seed, max_concurrent=spec.at_once),
        ),
        run_config=tune.RunConfig(name=spec.name, storage_path=spec.storage_path, verbose=1),
    )
    return [_outcome(result) for result in tuner.fit()]


def _outcome(result: Any) -> dict[str, Any]:
    metrics = result.metrics or {}
    return {"trial": metrics.get("trial_id") or Path(result.path).name, "config": dict(result.config),
            "history": _history(result),
            "error": str(result.error).strip().splitlines()[0][:300] if result.error else None}


def _history(result: Any) -> list[dict[str, float]]:
    """Per-epoch numeric metrics of one trial (``step`` = epoch), Tune's own keys left out."""
    from ray.tune.result import AUTO_RESULT_KEYS

    frame = result.metrics_dataframe
    if frame is None:
        return []
    rows = []
    for i, row in enumerate(frame.to_dict("records")):
        keep = {k: float(v) for k, v in row.items()
                if k not in _NOT_METRICS and k not in AUTO_RESULT_KEYS and not k.startswith("config/")
                and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        rows.append({"step": int(row.get("epoch", i)), **keep})
    return rows


__all__ = ["TRIAL_CPU", "TuneSpec", "search_space", "run_trials"]
