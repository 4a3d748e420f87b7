"""The scene language: canonical captions, reference captions, parser, scoring."""

from __future__ import annotations

import re

import numpy as np
import pytest

from components.data.scene_language import (
    COLOUR_SYNONYMS,
    COLOURS,
    RELATIONS,
    SHAPE_SYNONYMS,
    SHAPES,
    SIZE_SYNONYMS,
    SIZES,
    ParsedCaption,
    ParsedObject,
    SceneObject,
    canonical_caption,
    canonical_relations,
    describe,
    names_all_objects,
    parse_caption,
    reference_captions,
    relation_holds,
    score_caption,
    spatial_relation,
)
from components.data.synthetic import sample_scene

RED_CIRCLE = SceneObject("circle", "red", "small", x=0.2, y=0.5)
BLUE_SQUARE = SceneObject("square", "blue", "large", x=0.7, y=0.45)
GREEN_TRIANGLE_LOW = SceneObject("triangle", "green", "small", x=0.35, y=0.9)
WHITE_CROSS_HIGH = SceneObject("cross", "white", "large", x=0.3, y=0.1)


def random_scenes(count: int, seed: int = 0) -> list[list[SceneObject]]:
    rng = np.random.default_rng(seed)
    return [sample_scene(rng) for _ in range(count)]


# --- canonical phrasing -------------------------------------------------------


def test_describe_is_size_colour_shape():
    assert describe(RED_CIRCLE) == "a small red circle"
    assert describe(WHITE_CROSS_HIGH) == "a large white cross"


def test_spatial_relation_takes_dominant_axis_and_y_grows_down():
    assert spatial_relation(RED_CIRCLE, BLUE_SQUARE) == "left_of"
    assert spatial_relation(BLUE_SQUARE, RED_CIRCLE) == "right_of"
    assert spatial_relation(WHITE_CROSS_HIGH, RED_CIRCLE) == "above"  # dy = 0.4 > dx = 0.1
    assert spatial_relation(GREEN_TRIANGLE_LOW, RED_CIRCLE) == "below"
    assert relation_holds(WHITE_CROSS_HIGH, "left_of", BLUE_SQUARE)  # holds along x although above dominates
    assert not relation_holds(BLUE_SQUARE, "above", WHITE_CROSS_HIGH)


def test_canonical_caption_one_two_three_objects():
    assert canonical_caption([RED_CIRCLE]) == "a small red circle"
    # the left object first, whatever order the scene lists them in
    assert canonical_caption([BLUE_SQUARE, RED_CIRCLE]) == "a small red circle to the left of a large blue square"
    # vertical pair: the upper object first, stated with "above"
    vertical = canonical_caption([GREEN_TRIANGLE_LOW, WHITE_CROSS_HIGH])
    assert vertical == "a large white cross above a small green triangle"
    assert canonical_caption([BLUE_SQUARE, GREEN_TRIANGLE_LOW, RED_CIRCLE]) == (
        "a small red circle a small green triangle and a large blue square from left to right"
    )
    with pytest.raises(ValueError):
        canonical_caption([])


def test_canonical_relations_match_the_canonical_caption():
    scene = [BLUE_SQUARE, GREEN_TRIANGLE_LOW, RED_CIRCLE]
    assert canonical_relations(scene) == [(2, "left_of", 1), (1, "left_of", 0)]
    assert canonical_relations([GREEN_TRIANGLE_LOW, WHITE_CROSS_HIGH]) == [(1, "above", 0)]
    assert canonical_relations([RED_CIRCLE]) == []


# --- reference captions ---------------------------------------------------------


def test_reference_captions_count_canonical_copies_and_variety():
    for scene in random_scenes(100):
        captions = reference_captions(scene, np.random.default_rng(1))
        assert len(captions) == 5
        assert captions[:2] == [canonical_caption(scene)] * 2
        assert len(set(captions[2:])) == 3  # three distinct variations
        assert canonical_caption(scene) not in captions[2:]
        for caption in captions:
            # already in prepare's normalized form, and short enough for max_caption_length 20
            assert re.fullmatch(r"[a-z]+( [a-z]+)*", caption), caption
            assert len(caption.split()) <= 17


def test_reference_captions_are_seeded_and_honour_n():
    scene = [RED_CIRCLE, BLUE_SQUARE]
    a = reference_captions(scene, np.random.default_rng(7), n=9, canonical_copies=3)
    b = reference_captions(scene, np.random.default_rng(7), n=9, canonical_copies=3)
    assert a == b and len(a) == 9 and a.count(canonical_caption(scene)) == 3
    assert reference_captions(scene, np.random.default_rng(0), n=1) == [canonical_caption(scene)]
    with pytest.raises(ValueError):
        reference_captions([], np.random.default_rng(0))
    with pytest.raises(ValueError):
        reference_captions([RED_CIRCLE] * 4, np.random.default_rng(0))


def test_variations_use_synonyms_counts_and_inverse_relations():
    words: set[str] = set()
    for scene in random_scenes(300, seed=3):
        for caption in reference_captions(scene, np.random.default_rng(len(words))):
            words.update(caption.split())
    tables = (SIZE_SYNONYMS, COLOUR_SYNONYMS, SHAPE_SYNONYMS)
    synonyms = {s for table in tables for alts in table.values() for s in alts}
    assert synonyms <= words
    assert {"two", "three", "shapes", "right", "below", "above", "over", "under", "circles"} <= words


# --- parser: round trip over generated captions ----------------------------------------


def test_every_reference_caption_parses_back_to_the_true_scene():
    for k, scene in enumerate(random_scenes(400, seed=11)):
        for caption in reference_captions(scene, np.random.default_rng(k)):
            parsed = parse_caption(caption)
            score = score_caption(parsed, scene)
            assert score["exact"], (caption, scene, parsed)
            assert score["relations_fp"] == 0, (caption, scene, parsed)
            assert score["count_correct"] is not False, (caption, scene)
            assert names_all_objects(parsed, scene, fields=("size", "colour", "shape"))
        canonical = score_caption(parse_caption(canonical_caption(scene)), scene)
        assert canonical["relations_fn"] == 0
        assert canonical["relations_tp"] == len(scene) - 1


# --- parser: hand-written cases ------------------------------------------------


def obj(size, colour, shape) -> ParsedObject:
    return ParsedObject(size=size, colour=colour, shape=shape)


def test_parse_is_robust_to_case_punctuation_and_extra_words():
    parsed = parse_caption("  A SMALL, Red circle!!  It is -- to the LEFT of...   a Large blue square?")
    assert parsed.objects == (obj("small", "red", "circle"), obj("large", "blue", "square"))
    assert parsed.relations == ((0, "left_of", 1),)


@pytest.mark.parametrize(
    ("table", "field"), [(SIZE_SYNONYMS, "size"), (COLOUR_SYNONYMS, "colour"), (SHAPE_SYNONYMS, "shape")]
)
def test_every_synonym_maps_back(table, field):
    for canonical, synonyms in table.items():
        for word in (canonical, *synonyms):
            base = {"size": "small", "colour": "red", "shape": "circle"} | {field: word}
            parsed = parse_caption(f"a {base['size']} {base['colour']} {base['shape']}")
            assert len(parsed.objects) == 1
            assert getattr(parsed.objects[0], field) == canonical, word


def test_every_canonical_word_is_understood():
    for size in SIZES:
        for colour in COLOURS:
            for shape in SHAPES:
                assert parse_caption(f"a {size} {colour} {shape}").objects == (obj(size, colour, shape),)


def test_counts_and_plurals():
    assert parse_caption("two blue squares").objects == (obj(None, "blue", "square"),) * 2
    assert parse_caption("Three big boxes").objects == (obj("large", None, "square"),) * 3
    assert parse_caption("2 little violet discs").objects == (obj("small", "purple", "circle"),) * 2
    assert parse_caption("red crosses").objects == (obj(None, "red", "cross"),) * 2  # bare plural: two
    assert parse_caption("a single small white triangle").objects == (obj("small", "white", "triangle"),)
    mixed = parse_caption("two small red circles and a large blue square")
    assert mixed.objects == (obj("small", "red", "circle"),) * 2 + (obj("large", "blue", "square"),)


def test_count_statement_names_no_object():
    parsed = parse_caption("three shapes a small red circle a big blue box and a little green triangle")
    assert parsed.count == 3
    assert len(parsed.objects) == 3
    assert parse_caption("two shapes").objects == ()
    assert parse_caption("a small red circle").count is None


def test_relations_and_ordering_phrases():
    assert parse_caption("a large blue square to the right of a small red circle").relations == ((0, "right_of", 1),)
    assert parse_caption("a red circle over a blue square").relations == ((0, "above", 1),)
    assert parse_caption("a red circle under a blue square").relations == ((0, "below", 1),)
    assert parse_caption("a red circle beneath a blue square").relations == ((0, "below", 1),)
    listed = parse_caption("from left to right a red circle a blue square and a green cross")
    assert listed.relations == ((0, "left_of", 1), (1, "left_of", 2))
    assert parse_caption("a red circle and a blue square from top to bottom").relations == ((0, "above", 1),)
    # a relation with nothing on one side is dropped
    assert parse_caption("to the left of a red circle").relations == ()
    assert parse_caption("a red circle to the left of").relations == ()


def test_attributes_without_a_shape_still_name_an_object():
    parsed = parse_caption("a small red and a blue square")
    assert parsed.objects == (obj("small", "red", None), obj(None, "blue", "square"))
    assert parse_caption("two red shapes").objects == (obj(None, "red", None),) * 2


@pytest.mark.parametrize("text", ["", "   ", "the quick brown fox jumps", "!!! ??? ...", "a picture of", "there is"])
def test_garbage_names_nothing(text):
    parsed = parse_caption(text)
    assert parsed == ParsedCaption(objects=(), relations=(), count=None)


# --- scoring ---------------------------------------------------------------


def test_score_counts_object_tp_fp_fn():
    truth = [RED_CIRCLE, BLUE_SQUARE]
    parsed = parse_caption("a small red circle a large green square and a small white cross")
    score = score_caption(parsed, truth)
    assert (score["objects_tp"], score["objects_fp"], score["objects_fn"]) == (1, 2, 1)
    assert score["exact"] is False
    # a missing attribute never matches
    score = score_caption(parse_caption("a red circle to the left of a large blue square"), truth)
    assert (score["objects_tp"], score["objects_fp"], score["objects_fn"], score["exact"]) == (1, 1, 1, False)
    assert score["relations_tp"] == 1  # the relation still grounds: nothing stated contradicts
    # nothing named
    score = score_caption(parse_caption("nothing here"), truth)
    assert (score["objects_tp"], score["objects_fp"], score["objects_fn"]) == (0, 0, 2)


def test_score_matches_duplicates_as_multisets():
    twin = SceneObject("circle", "red", "small", x=0.8, y=0.5)
    truth = [RED_CIRCLE, twin]
    one = score_caption(parse_caption("a small red circle"), truth)
    assert (one["objects_tp"], one["objects_fn"], one["exact"]) == (1, 1, False)
    three = score_caption(parse_caption("three small red circles"), truth)
    assert (three["objects_tp"], three["objects_fp"], three["exact"]) == (2, 1, False)
    two = score_caption(parse_caption("two small red circles"), truth)
    assert two["exact"] is True


def test_score_relations():
    truth = [RED_CIRCLE, BLUE_SQUARE]
    right = score_caption(parse_caption("a small red circle left of a large blue square"), truth)
    assert (right["relations_tp"], right["relations_fp"], right["relations_fn"]) == (1, 0, 0)
    inverse = score_caption(parse_caption("a large blue square to the right of a small red circle"), truth)
    assert (inverse["relations_tp"], inverse["relations_fp"], inverse["relations_fn"]) == (1, 0, 0)
    wrong = score_caption(parse_caption("a small red circle to the right of a large blue square"), truth)
    assert (wrong["relations_tp"], wrong["relations_fp"], wrong["relations_fn"]) == (0, 1, 1)
    assert wrong["exact"] is True  # objects right, relation wrong: exact is about objects only
    absent = score_caption(parse_caption("a small red circle left of a large green cross"), truth)
    assert (absent["relations_tp"], absent["relations_fp"]) == (0, 1)  # the green cross is not in the scene
    silent = score_caption(parse_caption("a small red circle and a large blue square"), truth)
    assert (silent["relations_tp"], silent["relations_fp"], silent["relations_fn"]) == (0, 0, 1)


def test_score_count_statement():
    truth = [RED_CIRCLE, BLUE_SQUARE]
    assert score_caption(parse_caption("two shapes a small red circle and a large blue square"), truth)["count_correct"]
    assert score_caption(parse_caption("three shapes"), truth)["count_correct"] is False


def test_names_all_objects_checks_colour_and_shape_only_by_default():
    truth = [RED_CIRCLE, BLUE_SQUARE]
    assert names_all_objects(parse_caption("a big red circle and a blue square and a green cross"), truth)
    all_fields = ("size", "colour", "shape")
    assert not names_all_objects(parse_caption("a big red circle and a blue square"), truth, fields=all_fields)
    assert not names_all_objects(parse_caption("a red circle and a blue cross"), truth)
    assert not names_all_objects(parse_caption("a red circle"), truth)
    twins = [RED_CIRCLE, SceneObject("circle", "red", "large", x=0.8, y=0.5)]
    assert not names_all_objects(parse_caption("a red circle"), twins)  # both must be named
    assert names_all_objects(parse_caption("two red circles"), twins)
    with pytest.raises(ValueError):
        names_all_objects(parse_caption("a red circle"), truth, fields=("hue",))


def test_relation_names_are_the_canonical_set():
    seen = {
        rel
        for k, scene in enumerate(random_scenes(200, seed=5))
        for caption in reference_captions(scene, np.random.default_rng(k))
        for _, rel, _ in parse_caption(caption).relations
    }
    assert seen == set(RELATIONS)
