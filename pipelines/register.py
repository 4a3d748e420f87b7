"""DVC stage ``register``: every model family's model folder into the MLflow model registry.

    python -m pipelines.register --params params.yaml \
        --captioner models/captioner --vae models/vae --gan models/gan \
        --captioner-metrics metrics/captioner.json --vae-metrics metrics/vae.json \
        --gan-metrics metrics/gan.json --report reports/register.json

Each family that registers (``Family.registration``, :func:`components.registry.kinds`)
gets ``--<family>`` (its model folder) and ``--<family>-metrics``; the folder
is logged as a pyfunc model and registered under the family's name
(``capsynth-captioner``, ``capsynth-vae``, ``capsynth-gan``);
``champion`` moves to a new version only when its key metric beats the current
champion's, else the version is the ``challenger``. A folder registered before
(same hash) is found, not added again. ``--report`` says which version got
which alias, and why. A missing model folder or metrics file is an error; a
missing key metric is not (the version becomes a challenger, with the reason).
``--families NAME ...`` registers only those (their options only), e.g.
``--families captioner scst`` after a captioning recipe (README §Recipes).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

from components import registry, tracking
from components.io import write_json
from pipelines.common import stage_main

log = logging.getLogger("register")


def read_metrics(path: Path) -> dict:
    """The metrics JSON of one model (an object)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the stage that evaluates this model first")
    metrics = json.loads(path.read_text())
    if not isinstance(metrics, dict):
        raise FileNotFoundError(f"{path} holds no JSON object of metrics")
    return metrics


def run(models: dict[str, Path], metrics_files: dict[str, Path], *, report: Path,
        params_file: str = "params.yaml") -> dict[str, dict]:
    """Register every model folder in ``models`` (family name -> folder); write and return the report."""
    metrics = {family: read_metrics(metrics_files[family]) for family in models}
    for family, folder in models.items():  # fail before anything is logged
        registry.check_model_dir(family, folder)
    params = {f"{family}.{what}": str(path) for what, paths in (("model", models), ("metrics", metrics_files))
              for family, path in paths.items()}
    registered = registry.kinds()
    params |= {f"{family}.key_metric": "|".join(registered[family].metrics) for family in models}
    with tracking.stage_run("register", params=params, params_file=params_file):
        result = {}
        for family, folder in models.items():
            done = registry.register(family, folder, metrics[family])
            log.info("%s v%s: %s (%s)", done.name, done.version, done.alias or ",".join(done.aliases) or "-",
                     done.reason)
            result[family] = dataclasses.asdict(done)
            tracking.set_tags({f"{family}.version": done.version, f"{family}.aliases": ",".join(done.aliases)})
            if done.key_metric is not None:
                tracking.log_metrics({f"{family}.{done.key_metric}": done.key_metric_value})
        write_json(report, result)
        tracking.log_artifacts({"report": report})
    return result


@stage_main("register")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="hashed into the pipeline run id")
    known = list(registry.kinds())
    for p in (parser, pre := argparse.ArgumentParser(add_help=False)):  # as evaluate's --families
        p.add_argument("--families", nargs="+", choices=known, default=known, metavar="NAME",
                       help=f"register only these families (default: all of {', '.join(known)})")
    names = pre.parse_known_args(argv)[0].families
    for family in names:
        parser.add_argument(f"--{family}", type=Path, default=Path(f"models/{family}"), help="model folder")
        parser.add_argument(f"--{family}-metrics", type=Path, default=Path(f"metrics/{family}.json"),
                            help="its metrics JSON")
    parser.add_argument("--report", type=Path, default=Path("reports/register.json"))
    args = parser.parse_args(argv)
    models = {family: getattr(args, family) for family in names}
    metrics_files = {family: getattr(args, f"{family}_metrics") for family in names}
    run(models, metrics_files, report=args.report, params_file=args.params)


if __name__ == "__main__":
    main()
