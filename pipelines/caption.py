"""``capsynth caption IMAGE... [--model DIR] [--beam-size K]``: one caption per image.

The model folder (``models/captioner`` by default) records the backbone its
features came from; the images go through that backbone, then the decoder.
``models:/NAME@ALIAS`` (the MLflow registry) is not supported yet: it comes
with the registry work.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from components.captioning.inference import Captioner
from pipelines.common import stage_main


@stage_main("caption")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="capsynth caption", description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", type=Path, help="image files (any format PIL reads)")
    parser.add_argument("--model", default="models/captioner", help="model folder (default: %(default)s)")
    parser.add_argument("--beam-size", type=int, default=3, help="1: greedy (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.model.startswith("models:/"):
        parser.error("models:/NAME@ALIAS needs the MLflow registry, not available yet: pass a model folder")
    if not Path(args.model, "config.json").is_file():
        raise FileNotFoundError(f"{args.model}/config.json not found: train a captioner first (dvc repro)")
    missing = [str(p) for p in args.images if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"no such image: {', '.join(missing)}")
    captioner = Captioner(args.model, beam_size=args.beam_size)
    for path, caption in zip(args.images, captioner(args.images)):
        print(f"{path}\t{caption}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
