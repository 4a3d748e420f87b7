"""DVC stage ``pascal50s``: caption metrics against people, on Pascal-50S's judged pairs.

    python -m pipelines.pascal50s --params params.yaml --out metrics/pascal50s.json

Reads ``pascal50s.dir`` (the ``pyCIDErConsensus`` folder of the CIDEr paper's
data: ``pair_pascal.mat`` and ``consensus_pascal.mat``,
:mod:`components.data.pascal50s_consensus`) and writes, atomically, each
caption metric's accuracy at picking the caption people chose, per pair kind
(HC, HI, HM, MM) and overall (:mod:`components.metrics.human_agreement`), with
the counts, ties, tokenizer, unavailable metrics and the two files' SHA-256.

The folder is a dependency of the stage in ``dvc.yaml`` (``${pascal50s.dir}``),
so DVC reruns it when the files change. While it holds neither file (the
default ``datasets/pascal50s``: the files are not shipped) the stage is
skipped: the metrics file says so and why, and no MLflow run is opened. A
folder with one file but not the other, or a bad file, stops the stage with
the file and field named (exit code 2).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from components import tracking
from components.config import flatten, to_dict
from components.data.pascal50s_consensus import consensus_files, read_consensus
from components.io import short_sha256, write_json
from components.metrics.human_agreement import evaluate_agreement
from pipelines.common import stage_main
from pipelines.config import Pascal50sConfig, load_params

log = logging.getLogger("pascal50s")


def skip_reason(cfg: Pascal50sConfig) -> str | None:
    """Why the stage is skipped (``pascal50s.dir`` holds neither file), or None when it runs."""
    if any(path.exists() for path in consensus_files(cfg.dir).values()):
        return None
    return (f"{cfg.dir} holds neither pair_pascal.mat nor consensus_pascal.mat: put the CIDEr paper's "
            f"pyCIDErConsensus files there, or set pascal50s.dir to their folder (datasets/pascal50s/README.md)")


def run(cfg: Pascal50sConfig, out: Path) -> dict:
    """Score every caption metric against the people's choices; write and return the metrics.

    Args:
        cfg: The ``pascal50s`` params group.
        out: The metrics JSON.
    """
    reason = skip_reason(cfg)
    if reason:
        result = {"skipped": True, "reason": reason, "dir": cfg.dir, "num_refs": cfg.num_refs, "seed": cfg.seed}
    else:
        consensus = read_consensus(cfg.dir)
        result = {"skipped": False, "dir": cfg.dir,
                  **evaluate_agreement(consensus, num_refs=cfg.num_refs, seed=cfg.seed),
                  "sha256": {name: short_sha256(path, 64) for name, path in consensus_files(cfg.dir).items()}}
    write_json(out, result)
    return result


def tracked_metrics(result: dict) -> dict[str, float]:
    """The accuracies as flat MLflow metric names, e.g. ``accuracy_cider_HC``."""
    return {f"accuracy_{metric}_{group}": value for metric, groups in result["accuracy"].items() if groups
            for group, value in groups.items() if value is not None}


@stage_main("pascal50s")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("metrics/pascal50s.json"), help="metrics JSON")
    args = parser.parse_args(argv)
    cfg = load_params(args.params).pascal50s
    if skip_reason(cfg):
        result = run(cfg, args.out)
        log.info("skipped: %s; wrote %s", result["reason"], args.out)
        return
    with tracking.stage_run("pascal50s", params=flatten(to_dict(cfg)), params_file=args.params):
        result = run(cfg, args.out)
        tracking.set_tags({f"sha256_{name}": digest[:16] for name, digest in result["sha256"].items()})
        tracking.log_metrics(tracked_metrics(result))
        tracking.log_artifacts({"metrics": args.out})
    log.info("accuracy over all %d pairs (%s tokens, %d references each): %s; wrote %s",
             result["n_pairs"]["all"], result["tokenizer"], result["refs_per_pair"],
             {m: round(g["all"], 4) for m, g in result["accuracy"].items() if g}, args.out)


if __name__ == "__main__":
    main()
