"""components.metrics.semantic: micro-averaged object/relation P/R/F1 and scene accuracy over a corpus."""

from __future__ import annotations

import pytest

from components.data.scene_language import SceneObject
from components.metrics.semantic import scene_accuracy

RED_CIRCLE = SceneObject("circle", "red", "small", x=0.2, y=0.5)
BLUE_SQUARE = SceneObject("square", "blue", "large", x=0.7, y=0.5)
GREEN_CROSS = SceneObject("cross", "green", "small", x=0.5, y=0.2)


def test_scene_accuracy_micro_averages_over_images():
    scenes = {1: [RED_CIRCLE, BLUE_SQUARE], 2: [GREEN_CROSS]}
    predictions = {
        # image 1: both objects right, relation right -> objects tp 2, relations tp 1; exact
        1: "A small red circle to the left of a large blue square.",
        # image 2: one wrong object (colour) -> objects fp 1, fn 1; not exact; names nothing right
        2: "a small white cross",
    }
    got = scene_accuracy(predictions, scenes)
    # objects: tp 2, fp 1, fn 1 -> precision 2/3, recall 2/3, F1 2/3
    assert got["object_precision"] == pytest.approx(2 / 3)
    assert got["object_recall"] == pytest.approx(2 / 3)
    assert got["object_f1"] == pytest.approx(2 / 3)
    # relations: image 1 tp 1; image 2 has one object, so no relation to state
    assert (got["relation_precision"], got["relation_recall"], got["relation_f1"]) == (1.0, 1.0, 1.0)
    assert got["exact_scene_accuracy"] == 0.5
    assert got["names_all_objects"] == 0.5


def test_scene_accuracy_of_nothing_named_is_zero_not_an_error():
    got = scene_accuracy({1: "nothing to see"}, {1: [RED_CIRCLE]})
    assert got["object_precision"] == 0.0 and got["object_recall"] == 0.0 and got["exact_scene_accuracy"] == 0.0
    with pytest.raises(ValueError):
        scene_accuracy({}, {1: [RED_CIRCLE]})
