"""DVC stage ``features``: prepared images → CNN grid + pooled features.

    python -m pipelines.features --params params.yaml --prepared data/prepared --out data/features

Reads ``<prepared>/images.parquet`` (only the images prepare kept), runs the
Ray Data pipeline of ``components.features.extract`` on local Ray, or on the
cluster at ``RAY_ADDRESS``, and writes ``<out>/part-*.parquet`` and
``<out>/meta.json`` atomically (a killed run leaves ``<out>`` as it was).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from components import tracking
from components.config import ConfigError, flatten, to_dict
from components.data.folders import PreparedDir
from components.features.extract import extract_features
from components.features.store import FeaturesDir
from components.features.weights import WeightsError, check_available
from components.io import atomic_dir, short_sha256
from components.ray_adapter import init_ray
from pipelines.common import stage_main
from pipelines.config import FeaturesConfig, load_params

log = logging.getLogger("features")


def run(cfg: FeaturesConfig, prepared: Path, out: Path, *, progress: bool = True) -> dict:
    """Run the stage; return ``meta.json``'s content. ``out`` is replaced atomically."""
    images = PreparedDir(prepared).images
    if not images.is_file():
        raise FileNotFoundError(f"{images} not found: run the prepare stage first")
    try:
        check_available(cfg.backbone, weights=cfg.weights, weights_path=cfg.weights_path)  # before Ray starts
        init_ray()
        with atomic_dir(out) as tmp:
            return extract_features(images, tmp, **dataclasses.asdict(cfg), progress=progress)
    except WeightsError as err:  # a weights file that does not fit the backbone
        raise ConfigError(f"features.weights ({cfg.weights}): {err}") from err


@stage_main("features")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    parser.add_argument("--prepared", default="data/prepared", type=Path, help="prepare stage output")
    parser.add_argument("--out", default="data/features", type=Path, help="output folder")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = parser.parse_args(argv)
    cfg = load_params(args.params).features
    with tracking.stage_run("features", params=flatten(to_dict(cfg)), params_file=args.params,
                            tags={"backbone": cfg.backbone}):
        meta = run(cfg, args.prepared, args.out, progress=not args.no_progress)
        tracking.set_tags({"data_hash": short_sha256(PreparedDir(args.prepared).images),
                           "features_hash": short_sha256(FeaturesDir(args.out).meta),
                           "backbone_weights_sha256": meta["weights_sha256"]})
        tracking.log_metrics({"num_images": meta["num_images"]})
        tracking.log_artifacts({"features": FeaturesDir(args.out).meta})
    log.info("wrote %d images x (%d x %d grid + pooled) x %d channels, %s, to %s (weights %s, sha256 %s)",
             meta["num_images"], meta["grid_size"], meta["grid_size"], meta["channels"], meta["dtype"],
             args.out, meta["weights_source"], meta["weights_sha256"][:16])


if __name__ == "__main__":
    main()
