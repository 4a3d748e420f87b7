"""``capsynth seeds``: one setting over several seeds, as queued DVC experiments, summarised as mean ± std.

    capsynth seeds train_gan.train.seed [--seeds 0 1 2] [-S KEY=VALUE ...] [--profile smoke]
                   [--stage evaluate] [--metrics metrics/gan.json ...] [-j 1] [--name gan] [--out FILE]
                   [--queue-only]

For each seed it queues ``dvc exp run --queue --name <name>-<digest>-s<seed>
-S <seed param>=<seed> -S ... <stage>``, runs the queue's entries it made
(``-j`` at once, DVC's Celery workers, logs followed), then reads the metrics
files of every experiment (``dvc.api.read`` at the experiment) and prints, for
every number in them, the mean ± sample std (n − 1) over the seeds; ``--out``
(default ``seeds/<name>-<digest>.json``) keeps the values per seed as well.

* **Identity.** ``<digest>`` hashes the seed param, the overrides, the target
  stage and the uncommitted changes of the git tree; the experiments of an
  identical command (on the same commit) already exist, so rerunning it only
  summarises. Any change gives new experiment names.
* **Where results go.** Queued experiments run in DVC's temporary workspaces;
  their MLflow runs land in the project's store tagged
  ``capsynth.dvc_experiment`` (the experiment name: filter on
  ``tags.`capsynth.dvc_experiment` LIKE '<name>-<digest>-%'``), their Ray
  checkpoints in the project's ``ray_results/``; ``dvc exp show`` lists them.
  Stages that the overrides do not touch are restored from DVC's run cache
  (so is a stage whose deps and params some earlier run had: its numbers
  are that run's, and it opens no new MLflow run).
* **What varies.** Only the seed param: the data (``prepare.seed``) and the
  evaluation seeds stay as set, so the spread is the training's seed noise.
  A comparison of two settings is two such summaries; with fewer than 3 seeds
  the command warns that the spread says little.

Bad input: a seed param or override that ``params.yaml`` does not have (or a
value its schema refuses) fails before anything is queued, naming the key; an
experiment that fails is named with ``dvc queue logs <name>`` to read why, and
nothing is summarised.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from components import workspace

log = logging.getLogger(__name__)

DEFAULT_SEEDS = (0, 1, 2)
MIN_SEEDS = 3  # fewer: the spread is not an estimate of the seed noise


class SeedsError(RuntimeError):
    """A seeds run that cannot go on (bad params, failed experiments)."""


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["a.b=1", ...]`` as ``{"a.b": 1}``, values read as YAML (as DVC reads ``-S``)."""
    from ruamel.yaml import YAML

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SeedsError(f"-S {item!r}: expected KEY=VALUE")
        out[key] = YAML(typ="safe", pure=True).load(value)
    return out


def check_params(params_file: Path, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``params_file`` with ``overrides`` set (dotted keys), as a dict; fail naming the key when it is not a
    valid config."""
    from pipelines import config

    data = config._read_yaml(params_file)
    for key, value in overrides.items():
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            if not isinstance(node, dict) or part not in node:
                raise SeedsError(f"{params_file}: no field {key!r} (no {part!r})")
            node = node[part]
        if not isinstance(node, dict) or leaf not in node:
            raise SeedsError(f"{params_file}: no field {key!r}")
        node[leaf] = value
    try:
        config.build_params(data, source=f"{params_file} + -S overrides")
    except config.ConfigError as err:
        raise SeedsError(str(err)) from err
    return data


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout


def tree_state() -> str:
    """The uncommitted changes of the git tree (empty when clean): part of an experiment's identity."""
    return _git("status", "--porcelain", "--untracked-files=no") + _git("diff", "HEAD")


def experiment_names(name: str, seed_param: str, seeds: Sequence[int], overrides: Mapping[str, Any],
                     stage: str, tree: str) -> dict[int, str]:
    """``{seed: "<name>-<digest>-s<seed>"}``; the digest covers everything but the seed."""
    blob = json.dumps([seed_param, sorted(overrides.items()), stage, tree], sort_keys=True, default=str)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:6]
    return {seed: f"{name}-{digest}-s{seed}" for seed in seeds}


def existing_experiments() -> set[str]:
    """Names of the DVC experiments of the current commit."""
    out = subprocess.run(["dvc", "exp", "list", "--name-only"], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def _pending(q) -> dict[str, str]:
    """``{stash_rev: name}`` of the queue's entries that are queued or running."""
    return {e.stash_rev: e.name for e in [*q.iter_queued(), *q.iter_active()] if e.name}


def queue(names: Mapping[int, str], seed_param: str, overrides: Mapping[str, Any], stage: str) -> list[str]:
    """Queue the experiments that neither exist nor wait in the queue; returns the names still to finish."""
    from dvc.repo import Repo

    from pipelines.config import set_arg

    have = existing_experiments()
    with Repo() as repo:
        pending = set(_pending(repo.experiments.celery_queue).values())
    todo = []
    for seed, exp in names.items():
        if exp in have:
            log.info("experiment %s exists: not run again", exp)
            continue
        todo.append(exp)
        if exp in pending:
            log.info("experiment %s is in the queue already", exp)
            continue
        args = ["dvc", "exp", "run", "--queue", "--name", exp, "-S", set_arg(seed_param, seed)]
        for key, value in overrides.items():
            args += ["-S", set_arg(key, value)]
        subprocess.run([*args, stage], check=True)
    return todo


def run_queued(names: Sequence[str], jobs: int, poll_s: float = 5.0) -> None:
    """Run the queue (``jobs`` at once) until its entries named ``names`` are done; fail naming failures.

    The workers take the queue in order, so entries queued before these (by
    another ``capsynth seeds --queue-only``, say) run first. DVC's queue
    workers exit 10 s after they find the queue empty, and a ``dvc queue
    stop`` of earlier work can reach workers started later (the filesystem
    broker keeps the broadcast); so while any of these entries waits and
    nothing runs, workers are started again.
    """
    if not names:
        return
    from dvc.repo import Repo

    want = set(names)
    with Repo() as repo:
        q = repo.experiments.celery_queue
        mine = {rev: name for rev, name in _pending(q).items() if name in want}  # not older entries' names
        lost = want - set(mine.values())
        if lost:
            raise SeedsError(f"not in DVC's queue: {', '.join(sorted(lost))}")
        q.start_workers(count=jobs)
        shown, idle = None, 0
        while True:
            failed = sorted(mine[r.entry.stash_rev] for r in q.iter_failed() if r.entry.stash_rev in mine)
            if failed:
                raise SeedsError("experiment(s) failed: " + ", ".join(failed)
                                 + f" (see `dvc queue logs {failed[0]}`)")
            done = {r.entry.stash_rev for r in q.iter_success()} & set(mine)
            if done == set(mine):
                return
            active = {e.stash_rev for e in q.iter_active()}
            if (len(done), len(active & set(mine))) != shown:
                shown = (len(done), len(active & set(mine)))
                log.info("seeds: %d of %d experiments done, %d running (`dvc queue logs NAME -f` follows one)",
                         len(done), len(mine), shown[1])
            idle = 0 if active else idle + 1
            if idle * poll_s > 15:  # a worker starts within seconds; an idle one exits after 10 s
                q.start_workers(count=jobs)
                idle = 0
            time.sleep(poll_s)


def stage_metrics_files(stage: str) -> list[str]:
    """The metrics files ``dvc.yaml`` declares for ``stage``."""
    from dvc.repo import Repo

    with Repo() as repo:
        (found,) = repo.stage.collect(stage)
        return [str(out.def_path) for out in found.outs if out.metric]


def flatten_numbers(obj: Any, prefix: str, sep: str = ":") -> dict[str, float]:
    """Every int/float leaf of a JSON value, under ``<file>:<key>.<key>`` names (``metrics/gan.json:fid``)."""
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for key, value in obj.items():
            out.update(flatten_numbers(value, f"{prefix}{sep}{key}", "."))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix] = float(obj)
    return out


def read_metrics(exp: str, files: Sequence[str]) -> dict[str, float]:
    """The numbers of ``files`` as the experiment ``exp`` left them."""
    import dvc.api

    out: dict[str, float] = {}
    for path in files:
        out.update(flatten_numbers(json.loads(dvc.api.read(path, rev=exp)), path))
    return out


def summarise(per_seed: Mapping[int, Mapping[str, float]]) -> dict[str, dict[str, Any]]:
    """``{metric: {mean, std, n, values}}`` over the seeds; ``std`` is the sample std (n − 1), None for n < 2.

    A metric missing from some seed's results is summarised over the seeds
    that have it (``n`` says how many).
    """
    keys = sorted({k for values in per_seed.values() for k in values})
    out = {}
    for key in keys:
        values = {seed: m[key] for seed, m in per_seed.items() if key in m}
        xs = list(values.values())
        mean = math.fsum(xs) / len(xs)
        std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else None
        out[key] = {"mean": mean, "std": std, "n": len(xs), "values": {str(s): v for s, v in values.items()}}
    return out


def format_mean_std(mean: float, std: float | None) -> str:
    """``mean ± std`` to the std's first two significant digits (the mean alone when there is no std)."""
    if std is None:
        return f"{mean:.4g}"
    if std == 0:
        return f"{mean:.6g} ± 0"
    digits = max(0, 1 - math.floor(math.log10(abs(std))))
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def format_table(summary: Mapping[str, Mapping[str, Any]]) -> str:
    width = max((len(k) for k in summary), default=6)
    lines = [f"{'metric':<{width}}  mean ± std (n)"]
    for key, s in summary.items():
        lines.append(f"{key:<{width}}  {format_mean_std(s['mean'], s['std'])} ({s['n']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="capsynth seeds", description=__doc__.splitlines()[0])
    parser.add_argument("seed_param", help="the params key the seed goes into, e.g. train_gan.train.seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS))
    parser.add_argument("-S", "--set-param", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="the setting: params overrides, as for dvc exp run -S")
    parser.add_argument("--profile", help="add a params profile's overrides (e.g. smoke) before the -S ones")
    parser.add_argument("--stage", default="evaluate", help="the stage to reproduce (default: evaluate)")
    parser.add_argument("--metrics", nargs="+", help="metrics files to summarise (default: the stage's)")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="experiments at once (default 1)")
    parser.add_argument("--name", default="seeds", help="prefix of the experiment names")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", help="summary JSON (default seeds/<name>-<digest>.json)")
    parser.add_argument("--queue-only", action="store_true",
                        help="only queue the experiments; a later run of the same command runs and summarises")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        summary = run(args)
    except SeedsError as err:
        parser.exit(2, f"capsynth seeds: error: {err}\n")
    if "metrics" in summary:
        print(format_table(summary["metrics"]))
        print(f"\nwrote {summary['path']}", file=sys.stderr)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Queue, run and summarise (see the module doc); returns the summary written to ``--out``."""
    from components.io import write_json
    from pipelines import config

    if len(set(args.seeds)) != len(args.seeds):
        raise SeedsError(f"--seeds has repeats: {args.seeds}")
    if len(args.seeds) < MIN_SEEDS:
        log.warning("%d seed(s): a spread over fewer than %d seeds says little about the seed noise",
                    len(args.seeds), MIN_SEEDS)
    overrides = dict(config.profile_overrides(args.profile)) if args.profile else {}
    overrides.update(parse_overrides(args.overrides))
    if args.seed_param in overrides:
        raise SeedsError(f"{args.seed_param} is the seed param: do not also set it with -S")
    check_params(Path(args.params), {**overrides, args.seed_param: args.seeds[0]})
    names = experiment_names(args.name, args.seed_param, args.seeds, overrides, args.stage, tree_state())
    todo = queue(names, args.seed_param, overrides, args.stage)
    if args.queue_only:
        log.info("queued %s: `dvc queue start`, or this command without --queue-only, runs them", ", ".join(todo))
        return {"queued": todo}
    run_queued(todo, args.jobs)
    missing = sorted(set(names.values()) - existing_experiments())
    if missing:
        raise SeedsError(f"no DVC experiment named {', '.join(missing)} on this commit")
    files = args.metrics or stage_metrics_files(args.stage)
    per_seed = {seed: read_metrics(exp, files) for seed, exp in names.items()}
    stem = names[args.seeds[0]].rsplit("-s", 1)[0]
    summary = {"seed_param": args.seed_param, "overrides": overrides, "stage": args.stage,
               "experiments": {str(s): n for s, n in names.items()}, "metrics": summarise(per_seed)}
    path = Path(args.out) if args.out else Path(workspace.resolve(f"seeds/{stem}.json"))
    write_json(path, summary)
    summary["path"] = str(path)
    return summary


if __name__ == "__main__":
    main()
