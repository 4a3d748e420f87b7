"""DVC stage ``evaluate``: every model family's training outputs → its DVC metrics, and one HTML report.

    python -m pipelines.evaluate --params params.yaml --prepared data/prepared \
        --captioner-predictions data/predictions/captioner \
        --vae-model models/vae --vae-reports reports/vae --gan-model models/gan --gan-reports reports/gan \
        --captioner-metrics metrics/captioner.json --vae-metrics metrics/vae.json \
        --gan-metrics metrics/gan.json --report reports/index.html

For each family of the registry (:mod:`components.families`) that evaluates,
the stage hands its ``evaluate`` the training outputs the family names
(``--<family>-<output>``, its own or another family's: the imagine family
reads the captioner's model) and writes what it returns to
``--<family>-metrics``:

* ``metrics/captioner.json``: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D and SPICE
  of the predictions on the split, and on synthetic data the semantic scores
  against the scene table (:mod:`components.captioning.evaluation`).
* ``metrics/vae.json``: the VAE's ELBO, IWAE NLL and bits/dim on the split,
  recomputed from the model folder, and FID/KID of its prior samples.
* ``metrics/gan.json``: FID, KID, improved precision/recall and the Inception
  Score (null without Inception weights) of the EMA generator's samples
  (:mod:`components.generative.evaluation`).
* ``reports/index.html``: one self-contained page with those tables and each
  family's sections (captions with references and attention maps; sample
  grids, reconstructions, interpolations).

``--families NAME ...`` evaluates only those (their options only): to score
one model again by hand. The FID/KID feature network is built once, for the
first family that asks.
Every output is written atomically.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from components import families, tracking
from components.config import flatten, to_dict
from components.io import atomic_file, write_json
from components.report import Section, metrics_table, render_page
from components.train.family import Evaluation
from pipelines.common import stage_main
from pipelines.config import EvaluateConfig, load_params

log = logging.getLogger("evaluate")


class FeatureNetworkOnce:
    """The FID/KID feature network of ``evaluate``'s params, built on first use and then shared."""

    def __init__(self, cfg: EvaluateConfig):
        self.cfg = cfg
        self.network: Any = None

    def __call__(self) -> Any:
        if self.network is None:
            import torch

            from components.metrics.generative import feature_network

            device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
            self.network = feature_network(self.cfg.feature_network, inception_weights=self.cfg.inception_weights,
                                           seed=self.cfg.feature_seed, input_size=self.cfg.feature_size,
                                           device=device)
            log.info("FID/KID features: %s on %s", self.network.name, device)
        return self.network


def merge_sections(sections: list[Section]) -> list[Section]:
    """Sections of one id as one section (bodies in order), in the order of each id's first appearance."""
    merged: dict[str, Section] = {}
    for section in sections:
        if section.id in merged:
            first = merged[section.id]
            merged[section.id] = Section(first.id, first.title, first.body + section.body)
        else:
            merged[section.id] = section
    return list(merged.values())


def build_report(cfg: EvaluateConfig, *, metrics: Mapping[str, dict], sections: list[Section],
                 feature_network: str | None) -> str:
    """The HTML page: one metric table per family, then the families' sections (merged by id)."""
    tables = '<div class="tables">' + "".join(
        metrics_table(m, title=f"metrics/{name}.json") for name, m in metrics.items()) + "</div>"
    intro = f"split: {cfg.split}"
    if feature_network is not None:
        intro += f"; FID/KID feature network: {feature_network}" + (
            "" if feature_network.startswith("inception")
            else " (not Inception FID: in-domain numbers, README §Evaluation)")
    return render_page("capsynth evaluation", [Section("metrics", "Metrics", tables), *merge_sections(sections)],
                       intro=intro)


def run(cfg: EvaluateConfig, *, prepared: Path, outputs: Mapping[str, Mapping[str, Path]],
        metrics_paths: Mapping[str, Path], report_path: Path, params_file: str = "params.yaml") -> dict:
    """Evaluate every family in ``metrics_paths``; write their metrics files and the report.

    Args:
        cfg: The ``evaluate`` params group.
        prepared: The prepared data folder.
        outputs: Per family, its training outputs by name (``Family.eval_outputs``).
        metrics_paths: Per family, its metrics JSON.
        report_path: The HTML report.
        params_file: The params file, hashed into the pipeline run.
    """
    with tracking.stage_run("evaluate", params=flatten(to_dict(cfg)), params_file=params_file):
        network = FeatureNetworkOnce(cfg)
        metrics: dict[str, dict] = {}
        sections: list[Section] = []
        for name in metrics_paths:
            family = families.get(name)
            values, family_sections = family.evaluator()(Evaluation(cfg, prepared, outputs[name], network))
            metrics[name] = values
            sections += family_sections
        page = build_report(cfg, metrics=metrics, sections=sections,
                            feature_network=network.network.name if network.network is not None else None)
        for name, values in metrics.items():
            write_json(metrics_paths[name], values)
            tracking.log_metrics({f"{name}_{k}": v for k, v in values.items()
                                  if isinstance(v, (int, float)) and not isinstance(v, bool)})
        with atomic_file(report_path) as f:
            f.write(page)
        for path in metrics_paths.values():
            tracking.log_artifacts({"metrics": path})
        tracking.log_artifacts({"report": report_path})
    return metrics


def owned(name: str, ref: str) -> tuple[str, str]:
    """``(family, output)`` of an ``eval_outputs`` entry of family ``name``: ``output`` is its own,
    ``other.output`` another family's (the imagine family reads ``captioner.model``)."""
    owner, dot, output = ref.rpartition(".")
    return (owner if dot else name), output


def training_outputs(names: list[str]) -> dict[tuple[str, str], str]:
    """Every training output the families ``names`` read, ``(family, output) -> default path``, in order."""
    found: dict[tuple[str, str], str] = {}
    for name in names:
        for ref in families.get(name).eval_outputs:
            owner, output = owned(name, ref)
            found.setdefault((owner, output), families.get(owner).default_outputs()[output])
    return found


def evaluated() -> list[str]:
    """The registered families that evaluate, in registry order."""
    return [name for name in families.names() if families.get(name).evaluate is not None]


@stage_main("evaluate")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    known = evaluated()
    for p in (parser, pre := argparse.ArgumentParser(add_help=False)):  # the families decide the other options
        p.add_argument("--families", nargs="+", choices=known, default=known, metavar="NAME",
                       help=f"evaluate only these families (default: all of {', '.join(known)})")
    names = pre.parse_known_args(argv)[0].families
    options = training_outputs(names)
    for (owner, output), default in options.items():
        parser.add_argument(f"--{owner}-{output}", type=Path, default=Path(default),
                            help=f"a training output of {owner} (default: {default})")
    for name in names:
        parser.add_argument(f"--{name}-metrics", type=Path, default=Path(f"metrics/{name}.json"))
    parser.add_argument("--report", type=Path, default=Path("reports/index.html"))
    args = parser.parse_args(argv)
    cfg = load_params(args.params).evaluate
    outputs = {name: {ref: getattr(args, "{}_{}".format(*owned(name, ref)).replace("-", "_"))
                      for ref in families.get(name).eval_outputs} for name in names}
    metrics = run(cfg, prepared=args.prepared, outputs=outputs,
                  metrics_paths={name: getattr(args, f"{name}_metrics") for name in names},
                  report_path=args.report, params_file=args.params)
    for name, values in metrics.items():
        log.info("%s: %s", name, {k: round(v, 4) for k, v in values.items()
                                  if isinstance(v, float) and not isinstance(v, bool)})


if __name__ == "__main__":
    main()
