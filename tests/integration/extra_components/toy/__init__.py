"""A toy model family, as README §Adding a model family walks through it: one learnable colour.

A package like ``components/generative``: ``test_toy_family.py`` puts
``extra_components/`` on ``components.__path__``, so this is
``components.toy`` and the registry finds it as it finds the built-in
families. Here: its params group (no torch: loading ``params.yaml`` imports
only this) and its ``FAMILIES`` entry; the spec is in ``family.py``.
"""

from __future__ import annotations

import dataclasses

from components.families import Entry
from components.train.config import ScalingParams


@dataclasses.dataclass(frozen=True)
class ToyTrainParams:
    epochs: int
    lr: float
    image_size: int
    threads_per_worker: int


@dataclasses.dataclass(frozen=True)
class ToyParams:  # params.yaml: train_toy: {model: {}, train: {...}, scaling: {...}}
    model: dict[str, int]
    train: ToyTrainParams
    scaling: ScalingParams


FAMILIES = {"toy": Entry(params="components.toy:ToyParams", spec="components.toy.family:TOY")}
