"""``capsynth sample``: draw images from a trained VAE or GAN into one PNG grid.

    capsynth sample --model models/gan -n 64 --seed 0 samples.png
    capsynth sample --model models:/capsynth-gan@champion -n 16 --seed 3 out.png

``--model`` is a model folder written by ``train_vae`` / ``train_gan`` (it
rebuilds its model alone), or an MLflow registry URI ``models:/NAME@ALIAS``
(or ``models:/NAME/VERSION``) whose artifacts hold such a folder. The same
seed gives the same images (bit-identical on the CPU). The GAN samples from
its EMA generator when the folder has one. ``-n`` is bounded as a served
model's request is (``components.serving``: 1..1024, ``CAPSYNTH_SERVE_MAX_SAMPLES``).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from components.generative.io import load_generator
from components.generative.models import MODELS
from components.generative.sampling import image_grid, sample
from components.io import atomic_file
from components.model_folder import find_model_folder
from components.serving import ServingLimits
from pipelines.common import REGISTRY_PREFIX, local_model, stage_main


def find_model_dir(root: Path) -> Path:
    """The VAE or GAN model folder under ``root`` (itself included), e.g. inside a downloaded MLflow model."""
    return find_model_folder(root, MODELS)


def write_samples(model_dir: Path, out: Path, *, n: int, seed: int, nrow: int | None = None) -> Path:
    """Sample ``n`` images from the model folder and write them as one PNG grid (atomically)."""
    model, _ = load_generator(model_dir)
    images = sample(model, n, seed)  # (n, S, S, 3) uint8
    grid = image_grid(images, nrow=nrow or math.ceil(math.sqrt(n)))
    with atomic_file(out, "wb") as f:
        grid.save(f, format="PNG")
    return out


@stage_main("sample")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="capsynth sample", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model folder, or models:/NAME@ALIAS")
    parser.add_argument("-n", type=int, default=64, help="number of images (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the latents (default: %(default)s)")
    parser.add_argument("--nrow", type=int, default=None, help="images per row (default: ~sqrt(n))")
    parser.add_argument("out", type=Path, help="the PNG to write")
    args = parser.parse_args(argv)
    ServingLimits.from_env().check_n(args.n)
    with local_model(args.model, "sample") as path:
        # a folder is used as given; a registry model's artifacts hold the folder somewhere inside
        model_dir = find_model_dir(path) if args.model.startswith(REGISTRY_PREFIX) else path
        write_samples(model_dir, args.out, n=args.n, seed=args.seed, nrow=args.nrow)
    print(f"wrote {args.out}: {args.n} samples from {args.model} (seed {args.seed})")


if __name__ == "__main__":
    main()
