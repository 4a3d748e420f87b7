"""Probe: what the grid features say about each object of the synthetic scenes.

    .venv/bin/python -m bench.features.probe data/features data/prepared/synthetic/scenes.parquet

For every object, the grid cell under its centre (with ``--window K``: the
``(2K+1)²`` cells around it, zero-padded at the border, what a stack of 3x3
convolutions on the grid sees) is classified into the object's colour, shape
and size by a linear classifier and by a one-hidden-layer MLP, trained on the
train split's objects and scored on the val and test splits' (the majority
class is printed as the baseline); shape is also scored per object size. A quick check, before
training a captioner, that a backbone/weights/stage choice keeps what the
captions talk about.
"""

from __future__ import annotations

import argparse

import numpy as np
import pyarrow.parquet as pq
import torch
from torch import nn

from components.features.store import load_features


def _fit_score(x_train: torch.Tensor, y_train: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor, *,
               hidden: int, classes: int, steps: int = 300, seed: int = 0) -> torch.Tensor:
    """Per held-out object: whether the classifier trained on the train objects got it right."""
    torch.manual_seed(seed)
    layers = [nn.Linear(x_train.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, classes)] if hidden else [
        nn.Linear(x_train.shape[1], classes)]
    model = nn.Sequential(*layers)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2 if not hidden else 3e-3, weight_decay=1e-4)
    for _ in range(steps):  # full batch
        opt.zero_grad()
        nn.functional.cross_entropy(model(x_train), y_train).backward()
        opt.step()
    with torch.no_grad():
        return model(x_test).argmax(1) == y_test


def _window(grid: np.ndarray, side: int, x: float, y: float, k: int) -> np.ndarray:
    """The ``(2k+1)²`` cells of a ``(side², C)`` grid around the cell under ``(x, y)``, flattened, float32."""
    cells = np.asarray(grid, dtype=np.float32).reshape(side, side, -1)
    padded = np.pad(cells, ((k, k), (k, k), (0, 0)))
    row, col = min(int(y * side), side - 1), min(int(x * side), side - 1)
    return padded[row : row + 2 * k + 1, col : col + 2 * k + 1].reshape(-1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("features", help="the features stage's output folder")
    parser.add_argument("scenes", help="scenes.parquet of the synthetic dataset")
    parser.add_argument("--window", type=int, default=0, metavar="K",
                        help="classify the (2K+1) x (2K+1) cells around the centre (default 0: the centre cell)")
    args = parser.parse_args(argv)
    k = args.window

    fs = load_features(args.features)
    g = fs.meta["grid_size"]
    row = {int(i): r for r, i in enumerate(fs.image_ids)}
    objects = [o for o in pq.read_table(args.scenes).to_pylist() if o["image_id"] in row]
    x = np.stack([_window(fs.grid[row[o["image_id"]]], g, o["x"], o["y"], k) for o in objects])  # (objects, W²C)
    x = torch.from_numpy(x)
    train = torch.tensor([o["split"] == "train" for o in objects])
    mean, std = x[train].mean(0), x[train].std(0) + 1e-6
    x = (x - mean) / std
    print(f"{fs.meta['backbone']} stage {fs.meta.get('stage', 4)}, {fs.meta['input_size']} px, "
          f"{g}x{g}x{fs.meta['channels']} grid, {fs.meta['weights']} weights, {2 * k + 1}x{2 * k + 1} cells: "
          f"{int(train.sum())} train / {int((~train).sum())} held-out objects")
    held_out_size = np.array([o["size"] for o in objects])[~train.numpy()]
    for key in ("colour", "shape", "size"):
        names = sorted({o[key] for o in objects})
        y = torch.tensor([names.index(o[key]) for o in objects])
        majority = (y[~train] == y[train].mode().values).float().mean().item()
        linear = _fit_score(x[train], y[train], x[~train], y[~train], hidden=0, classes=len(names))
        mlp = _fit_score(x[train], y[train], x[~train], y[~train], hidden=256, classes=len(names))
        print(f"  {key:6s}  linear {linear.float().mean():.3f}  mlp {mlp.float().mean():.3f}  "
              f"(majority class {majority:.3f})")
        if key == "shape":
            for size in sorted(set(held_out_size)):
                pick = torch.from_numpy(held_out_size == size)
                print(f"    {size:6s} objects  linear {linear[pick].float().mean():.3f}  "
                      f"mlp {mlp[pick].float().mean():.3f}")


if __name__ == "__main__":
    main()
