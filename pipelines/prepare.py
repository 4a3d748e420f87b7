"""DVC stage ``prepare``: a dataset → images/captions tables, vocab and report.

    python -m pipelines.prepare --params params.yaml --out data/prepared \
        --report reports/prepare.json

With ``prepare.dataset: synthetic`` the scenes are generated first, in MS COCO
captions format, inside the output folder (``<out>/synthetic/``), and read back
through the same COCO loader as real data.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from components import tracking
from components.config import flatten, to_dict
from components.data.folders import PreparedDir
from components.data.loaders import load_dataset
from components.data.prepare import prepare_dataset
from components.data.ptb import default_cache_dir
from components.data.sources import AnnotationSource
from components.data.synthetic import write_synthetic_coco
from components.io import atomic_dir, short_sha256, write_json
from pipelines.common import stage_main
from pipelines.config import PrepareConfig, load_params

log = logging.getLogger("prepare")


def _relative(path: str) -> str:
    """Paths under the working directory are stored relative to it (portable)."""
    absolute = os.path.abspath(path)
    cwd = os.getcwd()
    return os.path.relpath(absolute, cwd) if absolute.startswith(cwd + os.sep) else absolute


def run(cfg: PrepareConfig, out: Path, report_path: Path, *, progress: bool = True) -> dict:
    """Run the stage; return the report. ``out`` is replaced atomically."""
    with atomic_dir(out) as tmp:
        if cfg.dataset == "synthetic":
            s = cfg.synthetic
            files = write_synthetic_coco(
                PreparedDir(tmp).synthetic.root,
                num_images=s.num_images,
                image_size=s.image_size,
                seed=cfg.seed,
                captions_per_image=s.captions_per_image,
                max_objects=s.max_objects,
                val_fraction=s.val_fraction,
                test_fraction=s.test_fraction,
                progress=progress,
            )
            sources = [AnnotationSource(file=str(files[split]), images_dir=str(files["images_dir"]),
                                        split=split) for split in ("train", "val", "test")]
            source = load_dataset("coco", sources)
            source.name = "synthetic"
        else:
            source = load_dataset(cfg.dataset, cfg.sources, split_file=cfg.split_file or None)

        report = prepare_dataset(
            source,
            tmp,
            on_bad_image=cfg.on_bad_image,
            min_word_count=cfg.min_word_count,
            max_caption_length=cfg.max_caption_length,
            num_workers=cfg.num_workers,
            # images generated in the temporary folder end up under `out`
            store_path=lambda p: _relative(str(out / Path(p).relative_to(tmp)))
            if Path(p).is_relative_to(tmp) else _relative(p),
            progress=progress,
            tokenizer=cfg.tokenizer,
            ptb_cache=default_cache_dir(),
        )
        report["params"] = {"dataset": cfg.dataset, "seed": cfg.seed}
    write_json(report_path, report)
    return report


@stage_main("prepare")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    parser.add_argument("--out", default="data/prepared", type=Path, help="output folder")
    parser.add_argument("--report", default="reports/prepare.json", type=Path, help="report JSON")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = parser.parse_args(argv)
    cfg = load_params(args.params).prepare
    with tracking.stage_run("prepare", params=flatten(to_dict(cfg)), params_file=args.params,
                            tags={"dataset": cfg.dataset}):
        report = run(cfg, args.out, args.report, progress=not args.no_progress)
        tracking.set_tags({"data_hash": short_sha256(PreparedDir(args.out).images)})
        tracking.log_metrics({k: v for k, v in report["counts"].items() if isinstance(v, (int, float))})
        tracking.log_artifacts({"report": args.report})
    c = report["counts"]
    log.info("kept %d/%d images and %d/%d captions; skipped %s; wrote %s and %s",
             c["images_kept"], c["images_found"], c["captions_kept"], c["captions_found"],
             report["skipped_counts"] or "nothing", args.out, args.report)


if __name__ == "__main__":
    main()
