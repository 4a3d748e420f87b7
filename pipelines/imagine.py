"""``capsynth imagine``: draw what a caption says with the trained caption-conditioned generator.

    capsynth imagine "a small red circle left of a large blue square" -n 8 --seed 0 out.png
    capsynth imagine "a small red circle" --model models:/capsynth-imagine@champion out.png

Writes one PNG grid of ``n`` images (one row of up to 8). A caption the model
cannot read (empty, longer than it was trained with, or with words outside
its vocabulary, which the message lists) is an error, as is ``n`` outside
``1..64``; nothing is written then.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from components.generative.sampling import image_grid
from components.imagine.io import FAMILY, MAX_IMAGES_PER_CAPTION, CaptionError, Imaginer
from components.io import atomic_file
from components.model_folder import find_model_folder
from pipelines.common import local_model, stage_main


def write_images(model_dir: Path, caption: str, out: Path, *, n: int, seed: int) -> Path:
    """Generate ``n`` images of ``caption`` and write them as one PNG grid (atomically)."""
    images = Imaginer(find_model_folder(model_dir, FAMILY))([caption], n=n, seed=seed)[0].numpy()  # (n, S, S, 3)
    grid = image_grid(images, nrow=min(n, 8))
    with atomic_file(out, "wb") as f:
        grid.save(f, format="PNG")
    return out


@stage_main("imagine")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="capsynth imagine", description=__doc__.splitlines()[0])
    parser.add_argument("caption", help="what to draw, in the words of the training captions")
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("-n", type=int, default=8, help=f"images, 1..{MAX_IMAGES_PER_CAPTION} (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise (default: %(default)s)")
    parser.add_argument("--model", default="models/imagine",
                        help="model folder, or models:/NAME@ALIAS (default: %(default)s)")
    args = parser.parse_args(argv)
    if not 1 <= args.n <= MAX_IMAGES_PER_CAPTION:
        parser.error(f"-n must be in 1..{MAX_IMAGES_PER_CAPTION}, got {args.n}")
    try:
        with local_model(args.model, "imagine") as model_dir:
            write_images(model_dir, args.caption, args.out, n=args.n, seed=args.seed)
    except CaptionError as err:  # what was asked cannot be drawn: a usage error, exit code 2
        parser.error(str(err))
    print(f"wrote {args.out}: {args.n} images of {args.caption!r} from {args.model} (seed {args.seed})")


if __name__ == "__main__":
    main()
