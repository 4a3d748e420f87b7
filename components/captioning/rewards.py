"""Sequence-level rewards of sampled captions (self-critical training), as a registry.

A reward is built once from the training data (:class:`RewardData`) and then
scores sampled captions: ``reward(samples, image_ids) -> (S,) float64``, one
value per sample, higher is better. Built in:

``cider_d``  CIDEr-D of the sample against its image's reference captions, with
             document frequencies from all training references
             (:class:`components.metrics.cider.CiderD`), as the COCO SCST
             recipes (Rennie et al. 2017) use it.
``scene``    synthetic data only: the F1 of what :func:`parse_caption` reads
             from the sample against the image's true scene, objects and
             relations pooled (``2 TP / (2 TP + FP + FN)`` over both; a
             one-object scene has no relation). Exact truth, not n-gram overlap.
``mix``      ``lambda * cider_d / cider_scale + (1 - lambda) * scene``: CIDEr-D
             divided by ``cider_scale`` (its typical best value on the data,
             so both terms are on about [0, 1]).

Rules for bad cases, the same for every reward (:func:`score`):

* an empty sample (the end token first) is scored like any caption: it names
  nothing, so CIDEr-D and scene F1 are 0;
* a sample that never emits the end token is scored as cut at the maximum
  length (the sampler stops there);
* a non-finite value is a bug in the reward, not a training signal:
  :class:`RewardError` names the reward, how many samples and the first one,
  and the training step stops with that one line instead of training on NaN.

Add a reward with :func:`register`: a name and a factory
``(data: RewardData, **options) -> Reward``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from components.data.scene_language import SceneObject, parse_caption, score_caption
from components.metrics.cider import CiderD

Reward = Callable[[Sequence[Sequence[str]], Sequence[int]], np.ndarray]


class RewardError(ValueError):
    """A reward that cannot score: unknown name, missing data, non-finite values."""


@dataclasses.dataclass(frozen=True)
class RewardData:
    """What rewards are built from.

    Attributes:
        references: image id -> its reference captions, as word lists (training split).
        scenes: image id -> its true objects (synthetic data); None elsewhere.
    """

    references: Mapping[int, Sequence[Sequence[str]]]
    scenes: Mapping[int, Sequence[SceneObject]] | None = None


def cider_d(data: RewardData) -> Reward:
    cider = CiderD(data.references.values())

    def reward(samples: Sequence[Sequence[str]], image_ids: Sequence[int]) -> np.ndarray:
        return cider.scores(samples, [data.references[int(i)] for i in image_ids])

    return reward


def scene_f1(parsed_and_truth: dict[str, Any]) -> float:
    """Pooled F1 of objects and relations from :func:`score_caption`'s counts (1 when both are empty)."""
    tp = parsed_and_truth["objects_tp"] + parsed_and_truth["relations_tp"]
    wrong = (parsed_and_truth["objects_fp"] + parsed_and_truth["objects_fn"] + parsed_and_truth["relations_fp"]
             + parsed_and_truth["relations_fn"])
    return 1.0 if tp == wrong == 0 else 2 * tp / (2 * tp + wrong)


def scene(data: RewardData) -> Reward:
    if data.scenes is None:
        raise RewardError("reward 'scene' needs the true scenes of the images (synthetic data: scenes.parquet)")
    scenes = data.scenes

    def reward(samples: Sequence[Sequence[str]], image_ids: Sequence[int]) -> np.ndarray:
        return np.array([scene_f1(score_caption(parse_caption(" ".join(words)), scenes[int(i)]))
                         for words, i in zip(samples, image_ids)], dtype=np.float64)

    return reward


def mix(data: RewardData, *, weight: float = 0.5, cider_scale: float = 6.0) -> Reward:
    if not 0.0 <= weight <= 1.0:
        raise RewardError(f"reward 'mix': weight must be in [0, 1], got {weight}")
    if cider_scale <= 0:
        raise RewardError(f"reward 'mix': cider_scale must be > 0, got {cider_scale}")
    by_cider, by_scene = cider_d(data), scene(data)

    def reward(samples: Sequence[Sequence[str]], image_ids: Sequence[int]) -> np.ndarray:
        return weight * by_cider(samples, image_ids) / cider_scale + (1 - weight) * by_scene(samples, image_ids)

    return reward


REWARDS: dict[str, Callable[..., Reward]] = {"cider_d": cider_d, "scene": scene, "mix": mix}


def register(name: str, factory: Callable[..., Reward]) -> None:
    """Add a reward: ``factory(data: RewardData, **options) -> Reward``."""
    if name in REWARDS:
        raise RewardError(f"a reward named '{name}' exists already")
    REWARDS[name] = factory


def build(name: str, data: RewardData, **options: Any) -> Reward:
    """The reward ``name`` built from ``data``; an unknown name lists the known ones."""
    if name not in REWARDS:
        raise RewardError(f"unknown reward '{name}'; known: {', '.join(sorted(REWARDS))}")
    return REWARDS[name](data, **options)


def score(name: str, reward: Reward, samples: Sequence[Sequence[str]], image_ids: Sequence[int]) -> np.ndarray:
    """``reward``'s values for ``samples``, checked: one finite float per sample, else :class:`RewardError`."""
    values = np.asarray(reward(samples, image_ids), dtype=np.float64)
    if values.shape != (len(samples),):
        raise RewardError(f"reward '{name}' returned shape {values.shape} for {len(samples)} samples")
    bad = ~np.isfinite(values)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise RewardError(f"reward '{name}' returned {int(bad.sum())} non-finite values of {len(samples)} "
                          f"(first: {values[first]} for '{' '.join(samples[first])}', image {image_ids[first]})")
    return values
