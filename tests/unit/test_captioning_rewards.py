"""components.captioning.rewards: cider_d, scene and mix rewards, the registry, the bad-case rules."""

from __future__ import annotations

import numpy as np
import pytest

from components.captioning import rewards
from components.data.scene_language import SceneObject, canonical_caption
from components.metrics.cider import CiderD

SCENES = {
    1: [SceneObject("circle", "red", "small", 0.2, 0.5), SceneObject("square", "blue", "large", 0.8, 0.5)],
    2: [SceneObject("triangle", "green", "large", 0.5, 0.5)],
}
REFS = {i: [canonical_caption(objs).split(), ("a " + " ".join(o.colour for o in objs)).split()]
        for i, objs in SCENES.items()}
DATA = rewards.RewardData(references=REFS, scenes=SCENES)


def test_cider_d_reward_is_cider_d_with_training_document_frequencies():
    reward = rewards.build("cider_d", DATA)
    samples = [REFS[1][0], ["a", "circle"], REFS[2][0]]
    got = rewards.score("cider_d", reward, samples, [1, 1, 2])
    want = CiderD(REFS.values()).scores(samples, [REFS[1], REFS[1], REFS[2]])
    np.testing.assert_array_equal(got, want)
    assert got[0] > got[1]


def test_scene_reward_is_the_pooled_f1_of_objects_and_relations():
    reward = rewards.build("scene", DATA)
    right = canonical_caption(SCENES[1]).split()  # both objects and their relation: F1 1
    one_object = "a small red circle".split()  # tp 1, fn 1 object + 1 relation: 2 / (2 + 2)
    wrong_colour = canonical_caption([SceneObject("triangle", "blue", "large", 0.5, 0.5)]).split()
    values = rewards.score("scene", reward, [right, one_object, wrong_colour, []], [1, 1, 2, 2])
    assert values.tolist() == [1.0, 0.5, 0.0, 0.0]  # the empty sample names nothing: 0


def test_mix_weighs_cider_d_scaled_and_scene():
    samples, ids = [REFS[1][0], ["a", "red"]], [1, 1]
    by_cider = rewards.build("cider_d", DATA)(samples, ids)
    by_scene = rewards.build("scene", DATA)(samples, ids)
    mixed = rewards.build("mix", DATA, weight=0.25, cider_scale=4.0)(samples, ids)
    np.testing.assert_allclose(mixed, 0.25 * by_cider / 4.0 + 0.75 * by_scene)


def test_unknown_reward_missing_scenes_and_bad_options_are_clear_errors():
    with pytest.raises(rewards.RewardError, match="unknown reward 'bleu'; known: cider_d, mix, scene"):
        rewards.build("bleu", DATA)
    with pytest.raises(rewards.RewardError, match="needs the true scenes"):
        rewards.build("scene", rewards.RewardData(references=REFS))
    with pytest.raises(rewards.RewardError, match="weight must be in"):
        rewards.build("mix", DATA, weight=2.0)


def test_a_registered_reward_is_built_and_non_finite_values_stop_with_one_line():
    rewards.register("length_nan", lambda data: lambda samples, ids: np.array([len(s) or np.nan for s in samples]))
    try:
        reward = rewards.build("length_nan", DATA)
        assert rewards.score("length_nan", reward, [["a", "b"]], [1]).tolist() == [2.0]
        with pytest.raises(rewards.RewardError, match=r"returned 1 non-finite values of 2 \(first: nan for '', image 2\)"):
            rewards.score("length_nan", reward, [["a"], []], [1, 2])
        with pytest.raises(rewards.RewardError, match="exists already"):
            rewards.register("length_nan", lambda data: None)
    finally:
        rewards.REWARDS.pop("length_nan")
