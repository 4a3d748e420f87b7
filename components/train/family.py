"""What a model family tells the pipeline about its training: the spec the generic train stage runs.

A family (the captioner, the VAE, the GAN, any later one) exports one
:class:`Family`; :mod:`components.families` maps names to them. The training
stage (``python -m pipelines.train --family NAME``), the sweep and the CLI
read the spec and never branch on a family's name:

1. the stage's config is the ``train_<name>`` group of ``params.yaml`` (or the
   stage its registry entry names; its class is registered beside the spec,
   :mod:`components.families`), with at least ``train`` (``threads_per_worker``,
   ``epochs``) and ``scaling`` (:class:`components.train.config.ScalingParams`),
   and ``model`` when the family builds its model from params;
2. ``data_version(inputs)`` hashes the input folders; with the loop's code and
   the params it names the Ray run (:func:`~components.train.ray_trainer.stable_run_name`),
   so only an identical run resumes;
3. ``loop`` runs under ``TorchTrainer`` (or a ``LocalSession``) with
   ``loop_config(cfg, inputs)``, reporting one state per epoch whose
   ``history`` rows hold ``curve_keys``;
4. ``export(cfg, state, trained)`` writes the model folder and the family's
   other outputs (atomically) from the final state and returns the metrics,
   which the stage writes, with the curves, and logs to MLflow;
5. the ``evaluate`` stage hands ``evaluate(evaluation)`` the training outputs
   named in ``eval_outputs`` and gets the family's metrics
   (``metrics/<name>.json``) and its sections of the HTML report;
6. the ``register`` stage registers the model folder as ``registration`` says
   and judges it by that key metric of ``metrics/<name>.json``.

Nothing here imports Ray or MLflow: a spec is plain data and functions.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

# every training stage writes these besides what its family lists
COMMON_OUTPUTS = ("model", "metrics", "plots")
# a metric named so measures wall-clock time or speed: the only figures two runs of the same seed on one machine
# may differ in; they stay out of model folders, whose bytes are the run's identity for DVC and the registry
WALL_CLOCK_SUFFIXES = ("_seconds", "_per_s", "_start_time")


def without_wall_clock(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """``metrics`` less its wall-clock figures (see :data:`WALL_CLOCK_SUFFIXES`)."""
    return {k: v for k, v in metrics.items() if not k.endswith(WALL_CLOCK_SUFFIXES)}


def steady_rate(history: Sequence[Mapping[str, float]], key: str) -> float:
    """Mean of ``key`` (a per-epoch throughput) over the epochs after the first (all of them if only one)."""
    rates = [row[key] for row in history]
    rates = rates[1:] or rates
    return float(sum(rates) / len(rates)) if rates else float("nan")


@dataclasses.dataclass(frozen=True)
class Trained:
    """One finished training run, as ``Family.export`` gets it.

    Attributes:
        run_name: The Ray run (``<family>-<hash>``): its checkpoints' folder.
        seconds: Wall-clock training time of this attempt (0 when it resumed a finished run).
        data_version: ``Family.data_version`` of the inputs.
        inputs: Input folders by name (``Family.inputs``).
        outputs: Output paths by name (``COMMON_OUTPUTS`` and ``Family.outputs``).
    """

    run_name: str
    seconds: float
    data_version: Mapping[str, str]
    inputs: Mapping[str, Path]
    outputs: Mapping[str, Path]


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """What the ``evaluate`` stage gives a family's ``evaluate``.

    Attributes:
        cfg: The ``evaluate`` params group (split, sample counts, seeds...).
        prepared: The prepared data folder (references, images, scenes).
        outputs: The training outputs named in ``Family.eval_outputs``, by those names.
        feature_network: Returns the FID/KID feature network, built once for
            every family that asks (``components.metrics.generative``).
    """

    cfg: Any
    prepared: Path
    outputs: Mapping[str, Path]
    feature_network: Callable[[], Any]


@dataclasses.dataclass(frozen=True)
class Family:
    """One model family's training, for the generic train stage.

    Attributes:
        name: ``captioner``, ``vae``, ...: the stage is ``train_<name>`` (also its
            ``params.yaml`` group), checkpoints go to ``<storage>/<name>-<hash>``.
        loop: ``train_loop_per_worker(config)``, importable by Ray workers.
        inputs: Input folders the stage reads, name -> default path
            (``{"prepared": "data/prepared"}``); each is a ``--<name>`` option.
        outputs: Outputs beside :data:`COMMON_OUTPUTS`, name -> default path
            (``{"reports": "reports/vae"}``); ``COMMON_OUTPUTS`` defaults are
            ``models/<name>``, ``metrics/train_<name>.json``, ``plots/<name>.csv``.
        loop_config: ``(cfg, inputs) -> dict``: the picklable config every
            worker's ``loop`` gets (absolute paths: workers run elsewhere).
        data_version: ``inputs -> {name: short hash}``: part of the run's
            identity, and MLflow tags.
        export: ``(cfg, state, trained) -> metrics``: writes the model folder
            and the family's outputs from the last checkpoint's state.
        curve_keys: Columns of the per-epoch curves CSV, from the history rows.
        progress_keys: The few of them the console's line per epoch shows
            (empty: every curve key but ``epoch``).
        tags: ``(inputs, data version) -> {tag: value}``: the MLflow tags of
            the stage run; None: the data version is the tags.
        evaluate: ``"module:function"`` of its ``evaluation -> (metrics, sections)``:
            the family's held-out metrics and its ``components.report.Section``
            list (a section id several families use is one section, in registry
            order). A name, not the function: the training stage does not import
            evaluation code, so a change there does not rerun training (DVC deps).
        eval_outputs: The training outputs ``evaluate`` reads: its own (``"predictions"``)
            or another family's (``"captioner.model"``), the keys of ``Evaluation.outputs``.
        registration: ``"module:attribute"`` of its ``components.registry.ModelKind``
            (registered name, pyfunc, key metric and direction): the ``register``
            stage logs its model folder and moves ``champion``. None: not registered.
    """

    name: str
    loop: Callable[[dict[str, Any]], None]
    inputs: Mapping[str, str]
    outputs: Mapping[str, str]
    loop_config: Callable[[Any, Mapping[str, Path]], dict[str, Any]]
    data_version: Callable[[Mapping[str, Path]], dict[str, str]]
    export: Callable[[Any, dict[str, Any], Trained], dict[str, Any]]
    curve_keys: tuple[str, ...]
    tags: Callable[[Mapping[str, Path], Mapping[str, str]], dict[str, str]] | None = None
    evaluate: str | None = None
    eval_outputs: tuple[str, ...] = ()
    registration: str | None = None
    progress_keys: tuple[str, ...] = ()

    @property
    def stage(self) -> str:
        """The training stage and its ``params.yaml`` group: ``train_<name>`` unless the family's
        registry entry names another (:func:`components.families.stage_of`)."""
        from components import families

        return families.stage_of(self.name)

    def run_tags(self, inputs: Mapping[str, Path], version: Mapping[str, str]) -> dict[str, str]:
        """The stage run's MLflow tags (:attr:`tags`, else the data version)."""
        return dict(self.tags(inputs, version)) if self.tags is not None else dict(version)

    def evaluator(self) -> Callable[[Evaluation], tuple[dict[str, Any], list[Any]]]:
        """The function named by :attr:`evaluate` (imported now)."""
        if self.evaluate is None:
            raise ValueError(f"model family '{self.name}' does not evaluate")
        module, _, function = self.evaluate.partition(":")
        return getattr(importlib.import_module(module), function)

    def default_outputs(self) -> dict[str, str]:
        """Every output of the stage, name -> default path."""
        return {"model": f"models/{self.name}", "metrics": f"metrics/train_{self.name}.json",
                "plots": f"plots/{self.name}.csv", **self.outputs}


__all__ = ["COMMON_OUTPUTS", "WALL_CLOCK_SUFFIXES", "Evaluation", "Family", "Trained", "steady_rate", "without_wall_clock"]
