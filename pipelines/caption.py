"""``capsynth caption IMAGE... [--model DIR | models:/NAME@ALIAS] [--beam-size K]``: one caption per image.

    capsynth caption img1.png img2.jpg --model models/captioner
    capsynth caption img1.png --model models:/capsynth-captioner@champion

``--model`` is a model folder written by ``train_captioner`` (``models/captioner``
by default), or an MLflow registry URI ``models:/NAME@ALIAS`` (or
``models:/NAME/VERSION``) of the project's store, whose artifacts hold such a
folder (the ``register`` stage puts it there). The folder records the backbone
its features came from; the images go through that backbone, then the decoder.

The served captioner's limits apply (``components.serving``: bytes and pixels
per image, ``--beam-size``; ``CAPSYNTH_SERVE_*`` changes them): a file that
is empty, not an image, truncated or over a limit stops the command with one
line naming it, ``capsynth caption: error: FILE: REASON``, and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from components.captioning.inference import Captioner
from components.captioning.io import FAMILY
from components.model_folder import find_model_folder
from components.serving import BadInput, ServingLimits
from pipelines.common import REGISTRY_PREFIX, local_model, stage_main


def find_model_dir(root: Path) -> Path:
    """The caption model folder under ``root`` (itself included), e.g. inside a downloaded MLflow model."""
    return find_model_folder(root, FAMILY)


def write_captions(images: list[Path], model_dir: Path, *, beam_size: int, limits: ServingLimits) -> None:
    """Print ``path<TAB>caption`` per image; every image is opened (and checked) before any is captioned."""
    captioner = Captioner(find_model_dir(model_dir), beam_size=beam_size)
    opened = []
    for path in images:
        try:
            opened.append(limits.open_image(path, captioner.input_size))
        except BadInput as err:
            raise BadInput(f"{path}: {err}") from None
    for path, caption in zip(images, captioner(opened)):
        print(f"{path}\t{caption}")
    sys.stdout.flush()


@stage_main("caption")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="capsynth caption", description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", type=Path, help="image files (any format PIL reads)")
    parser.add_argument("--model", default="models/captioner",
                        help="model folder or models:/NAME@ALIAS (default: %(default)s)")
    parser.add_argument("--beam-size", type=int, default=3, help="1: greedy (default: %(default)s)")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.images if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"no such image: {', '.join(missing)}")
    if not args.model.startswith(REGISTRY_PREFIX) and not Path(args.model).is_dir():
        raise FileNotFoundError(f"{args.model} not found: train a captioner first (dvc repro)")
    limits = ServingLimits.from_env()
    limits.check_beam_size(args.beam_size)
    limits.set_pil_limit()
    with local_model(args.model, "caption") as model_dir:
        write_captions(args.images, model_dir, beam_size=args.beam_size, limits=limits)


if __name__ == "__main__":
    main()
