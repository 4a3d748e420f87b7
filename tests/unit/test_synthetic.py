"""The synthetic scene generator: layouts, rendering, COCO files, determinism."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from components.data.scene_language import (
    COLOURS,
    SHAPES,
    SIZES,
    SceneObject,
    canonical_caption,
    parse_caption,
    score_caption,
)
from components.data.synthetic import (
    COLOUR_RGB,
    SCENES_SCHEMA,
    SIZE_HALF_EXTENT,
    layout_is_clear,
    read_scenes,
    render_scene,
    sample_scene,
    write_synthetic_coco,
)

NUM_IMAGES = 24
IMAGE_SIZE = 64


def boxes_overlap(a: SceneObject, b: SceneObject) -> bool:
    """Bounding squares intersect (an independent check of the generator's rule)."""
    reach = SIZE_HALF_EXTENT[a.size] + SIZE_HALF_EXTENT[b.size]
    return abs(a.x - b.x) < reach and abs(a.y - b.y) < reach


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    out = tmp_path_factory.mktemp("synthetic")
    files = write_synthetic_coco(out, num_images=NUM_IMAGES, image_size=IMAGE_SIZE, seed=3, progress=False)
    return out, files


# --- scenes -------------------------------------------------------------------


def test_sample_scene_counts_attributes_and_layout():
    rng = np.random.default_rng(0)
    scenes = [sample_scene(rng) for _ in range(600)]
    assert Counter(len(s) for s in scenes).keys() == {1, 2, 3}
    seen = Counter()
    for scene in scenes:
        assert layout_is_clear(scene)
        assert [o.x for o in scene] == sorted(o.x for o in scene)  # left to right
        for k, a in enumerate(scene):
            half = SIZE_HALF_EXTENT[a.size]
            assert half <= a.x <= 1 - half and half <= a.y <= 1 - half  # inside the image
            for b in scene[k + 1 :]:
                assert not boxes_overlap(a, b), scene
                assert abs(a.x - b.x) >= 0.1  # the left-to-right order is clear
            seen.update([("shape", a.shape), ("colour", a.colour), ("size", a.size)])
    assert {v for k, v in seen if k == "shape"} == set(SHAPES)
    assert {v for k, v in seen if k == "colour"} == set(COLOURS)
    assert {v for k, v in seen if k == "size"} == set(SIZES)


def test_sample_scene_is_seeded_and_checks_max_objects():
    a = [sample_scene(np.random.default_rng(5), max_objects=2) for _ in range(3)]
    b = [sample_scene(np.random.default_rng(5), max_objects=2) for _ in range(3)]
    assert a == b
    rng = np.random.default_rng(1)
    assert all(len(sample_scene(rng, max_objects=1)) == 1 for _ in range(20))
    for bad in (0, 4):
        with pytest.raises(ValueError):
            sample_scene(rng, max_objects=bad)


def test_layout_is_clear_rejects_overlap_and_ambiguous_relations():
    a = SceneObject("circle", "red", "small", x=0.3, y=0.3)
    assert not layout_is_clear([a, SceneObject("square", "blue", "small", x=0.35, y=0.32)])  # overlap
    assert not layout_is_clear([a, SceneObject("square", "blue", "small", x=0.6, y=0.6)])  # diagonal: left or above?
    assert not layout_is_clear([a, SceneObject("square", "blue", "small", x=0.32, y=0.8)])  # same column
    assert layout_is_clear([a, SceneObject("square", "blue", "small", x=0.7, y=0.35)])


# --- rendering ------------------------------------------------------------------


def nearest_colour(pixel: np.ndarray) -> str:
    return min(COLOUR_RGB, key=lambda c: float(np.sum((pixel - np.array(COLOUR_RGB[c])) ** 2)))


def test_render_size_mode_and_determinism():
    scene = sample_scene(np.random.default_rng(2))
    a = render_scene(scene, image_size=48, rng=np.random.default_rng(9))
    b = render_scene(scene, image_size=48, rng=np.random.default_rng(9))
    assert a.mode == "RGB" and a.size == (48, 48)
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != render_scene(scene, image_size=48, rng=np.random.default_rng(10)).tobytes()


def test_object_colours_are_visible_at_their_centres():
    rng = np.random.default_rng(4)
    for _ in range(150):
        scene = sample_scene(rng)
        pixels = np.asarray(render_scene(scene, image_size=IMAGE_SIZE, rng=rng), dtype=np.float64)
        for obj in scene:
            col, row = int(obj.x * IMAGE_SIZE), int(obj.y * IMAGE_SIZE)
            patch = pixels[row - 1 : row + 2, col - 1 : col + 2].reshape(-1, 3).mean(axis=0)  # (3,)
            assert nearest_colour(patch) == obj.colour, (obj, patch)
            assert np.abs(patch - np.array(COLOUR_RGB[obj.colour])).max() < 20, (obj, patch)
        # the corner is background: far from every object colour
        corner = pixels[:2, :2].reshape(-1, 3).mean(axis=0)
        if not any(o.x * IMAGE_SIZE < 12 and o.y * IMAGE_SIZE < 12 for o in scene):
            distance = min(np.abs(corner - np.array(rgb)).max() for rgb in COLOUR_RGB.values())
            assert distance > 60, corner


# --- dataset files ------------------------------------------------------------------


def test_writes_the_documented_layout(dataset):
    out, files = dataset
    assert set(files) == {"images_dir", "train", "val", "test", "scenes"}
    assert files["images_dir"] == out / "images"
    assert sorted(p.name for p in files["images_dir"].iterdir()) == [f"{i:06d}.png" for i in range(1, NUM_IMAGES + 1)]
    for split in ("train", "val", "test"):
        assert files[split] == out / "annotations" / f"captions_{split}.json"
    with Image.open(files["images_dir"] / "000001.png") as image:
        assert image.format == "PNG" and image.mode == "RGB" and image.size == (IMAGE_SIZE, IMAGE_SIZE)
        assert not image.text  # no metadata chunks


def test_coco_json_structure_and_splits(dataset):
    _, files = dataset
    docs = {split: json.loads(files[split].read_text()) for split in ("train", "val", "test")}
    image_ids, annotation_ids = [], []
    for split, doc in docs.items():
        assert set(doc) == {"info", "licenses", "images", "annotations"}
        assert doc["licenses"] == [] and doc["info"]["split"] == split
        assert not any("date" in key for key in doc["info"])
        ids = [img["id"] for img in doc["images"]]
        image_ids += ids
        for img in doc["images"]:
            expected = {"id": img["id"], "file_name": f"{img['id']:06d}.png", "width": IMAGE_SIZE, "height": IMAGE_SIZE}
            assert img == expected
        per_image = Counter(ann["image_id"] for ann in doc["annotations"])
        assert per_image == {i: 5 for i in ids}
        assert all(set(ann) == {"id", "image_id", "caption"} for ann in doc["annotations"])
        annotation_ids += [ann["id"] for ann in doc["annotations"]]
    assert sorted(image_ids) == list(range(1, NUM_IMAGES + 1))
    assert sorted(annotation_ids) == list(range(1, 5 * NUM_IMAGES + 1))
    # 24 images, 10% / 10% rounded: 20 / 2 / 2, contiguous id blocks
    assert [img["id"] for img in docs["val"]["images"]] == [21, 22]
    assert [img["id"] for img in docs["test"]["images"]] == [23, 24]


def test_coco_json_loads_with_pycocotools(dataset):
    coco_module = pytest.importorskip("pycocotools.coco")
    _, files = dataset
    coco = coco_module.COCO(str(files["train"]))
    assert len(coco.getImgIds()) == 20
    assert all(len(coco.getAnnIds(imgIds=[i])) == 5 for i in coco.getImgIds())


def test_scenes_table_matches_images_and_captions(dataset):
    out, files = dataset
    table = pq.read_table(files["scenes"])
    assert table.schema.equals(SCENES_SCHEMA)
    scenes = read_scenes(files["scenes"])
    assert sorted(scenes) == list(range(1, NUM_IMAGES + 1))
    docs = [json.loads(files[split].read_text()) for split in ("train", "val", "test")]
    split_of = {img["id"]: doc["info"]["split"] for doc in docs for img in doc["images"]}
    assert dict(zip(table["image_id"].to_pylist(), table["split"].to_pylist())) == split_of

    captions = [(ann["image_id"], ann["caption"]) for doc in docs for ann in doc["annotations"]]
    for image_id, caption in captions:
        assert score_caption(parse_caption(caption), scenes[image_id])["exact"], (image_id, caption)
    for image_id, scene in scenes.items():
        assert layout_is_clear(scene)
        assert canonical_caption(scene) in [c for i, c in captions if i == image_id]
        # the table gives back the exact scene the image was drawn from (same per-image stream)
        assert scene == sample_scene(np.random.default_rng([3, image_id]))
        pixels = np.asarray(Image.open(files["images_dir"] / f"{image_id:06d}.png"), dtype=np.float64)
        for obj in scene:
            centre = pixels[int(obj.y * IMAGE_SIZE), int(obj.x * IMAGE_SIZE)]
            assert np.abs(centre - np.array(COLOUR_RGB[obj.colour])).max() < 40


def test_same_seed_is_byte_identical_and_another_seed_differs(tmp_path, dataset):
    out, _ = dataset
    again = tmp_path / "again"
    write_synthetic_coco(again, num_images=NUM_IMAGES, image_size=IMAGE_SIZE, seed=3, progress=False)
    reference = tree_digest(out)
    assert len(reference) == NUM_IMAGES + 4
    assert tree_digest(again) == reference

    other = tmp_path / "other"
    write_synthetic_coco(other, num_images=NUM_IMAGES, image_size=IMAGE_SIZE, seed=4, progress=False)
    differing = {name for name, digest in tree_digest(other).items() if reference[name] != digest}
    assert {"scenes.parquet", "annotations/captions_train.json"} <= differing
    assert sum(name.startswith("images/") for name in differing) == NUM_IMAGES


def test_an_image_does_not_depend_on_the_dataset_size(tmp_path, dataset):
    out, _ = dataset
    small = tmp_path / "small"
    write_synthetic_coco(small, num_images=5, image_size=IMAGE_SIZE, seed=3, progress=False)
    for name in ("000001.png", "000005.png"):
        assert (small / "images" / name).read_bytes() == (out / "images" / name).read_bytes()


def test_options_are_honoured(tmp_path):
    files = write_synthetic_coco(
        tmp_path, num_images=10, image_size=32, seed=0, captions_per_image=3, max_objects=1,
        val_fraction=0.2, test_fraction=0.0, progress=False,
    )
    train = json.loads(files["train"].read_text())
    assert len(train["images"]) == 8 and len(train["annotations"]) == 24
    assert json.loads(files["test"].read_text())["images"] == []
    assert all(len(scene) == 1 for scene in read_scenes(files["scenes"]).values())
    with Image.open(files["images_dir"] / "000001.png") as image:
        assert image.size == (32, 32)


@pytest.mark.parametrize(
    "bad",
    [
        {"val_fraction": 0.6, "test_fraction": 0.5},
        {"val_fraction": -0.1},
        {"num_images": 0},
        {"seed": -1},
        {"max_objects": 4},
    ],
)
def test_bad_arguments_are_refused(tmp_path, bad):
    kwargs = {"num_images": 4, "image_size": 32, "seed": 0, "progress": False} | bad
    with pytest.raises(ValueError):
        write_synthetic_coco(tmp_path, **kwargs)
