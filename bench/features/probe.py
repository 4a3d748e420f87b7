"""Probe: what the grid features say about each object of the synthetic scenes.

    .venv/bin/python -m bench.features.probe data/features data/prepared/synthetic/scenes.parquet

For every object, the grid cell under its centre is classified into the
object's colour, shape and size by a linear classifier and by a one-hidden-
layer MLP, trained on the train split's objects and scored on the val and test
splits' (the majority class is printed as the baseline). A quick check, before
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
               hidden: int, classes: int, steps: int = 300, seed: int = 0) -> float:
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
        return (model(x_test).argmax(1) == y_test).float().mean().item()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("features", help="the features stage's output folder")
    parser.add_argument("scenes", help="scenes.parquet of the synthetic dataset")
    args = parser.parse_args(argv)

    fs = load_features(args.features)
    g = fs.meta["grid_size"]
    row = {int(i): r for r, i in enumerate(fs.image_ids)}
    objects = [o for o in pq.read_table(args.scenes).to_pylist() if o["image_id"] in row]
    cells = [min(int(o["y"] * g), g - 1) * g + min(int(o["x"] * g), g - 1) for o in objects]
    x = np.stack([fs.grid[row[o["image_id"]], c] for o, c in zip(objects, cells)])  # (objects, C)
    x = torch.from_numpy(x.astype(np.float32))
    train = torch.tensor([o["split"] == "train" for o in objects])
    mean, std = x[train].mean(0), x[train].std(0) + 1e-6
    x = (x - mean) / std
    print(f"{fs.meta['backbone']} stage {fs.meta.get('stage', 4)}, {fs.meta['input_size']} px, "
          f"{g}x{g}x{fs.meta['channels']} grid, {fs.meta['weights']} weights: "
          f"{int(train.sum())} train / {int((~train).sum())} held-out objects")
    for key in ("colour", "shape", "size"):
        names = sorted({o[key] for o in objects})
        y = torch.tensor([names.index(o[key]) for o in objects])
        majority = (y[~train] == y[train].mode().values).float().mean().item()
        linear = _fit_score(x[train], y[train], x[~train], y[~train], hidden=0, classes=len(names))
        mlp = _fit_score(x[train], y[train], x[~train], y[~train], hidden=256, classes=len(names))
        print(f"  {key:6s}  linear {linear:.3f}  mlp {mlp:.3f}  (majority class {majority:.3f})")


if __name__ == "__main__":
    main()
