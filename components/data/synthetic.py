"""Seeded synthetic scenes in MS COCO captions format, with their true objects.

Each image shows 1 to ``max_objects`` (at most 3) non-overlapping shapes
(:data:`~components.data.scene_language.SHAPES`) in clearly distinct colours
(:data:`COLOUR_RGB`) and two clearly different sizes (:data:`SIZE_HALF_EXTENT`),
on a dark or light grey, slightly tinted gradient with pixel noise: never as
saturated as an object colour, and never as bright as white. Five reference
captions per image come from :func:`~components.data.scene_language.reference_captions`.

Layout rules keep the captions a function of what the image shows: objects keep
a gap between their bounding squares; every two centres are at least
:data:`MIN_DX` apart horizontally (the left-to-right order is clear); and for
every pair one axis dominates the other by :data:`DOMINANCE` (``left of`` versus
``above`` is clear).

Image ``i`` is drawn from its own stream, ``np.random.default_rng([seed, i])``,
so the same seed gives byte-identical files, and an image does not depend on
how many others are generated. Scenes are independent draws, so the splits are
contiguous blocks of ids: train first, then val, then test.

Files written by :func:`write_synthetic_coco` under ``out_dir`` (named by
:class:`~components.data.folders.SyntheticDir`):

``images/{image_id:06d}.png``
    RGB, ``image_size`` x ``image_size``, no metadata, fixed compression.
``annotations/captions_{train,val,test}.json``
    MS COCO captions format: ``{"info": {...}, "licenses": [], "images":
    [{"id", "file_name", "width", "height"}], "annotations": [{"id",
    "image_id", "caption"}]}``. ``file_name`` is relative to ``images/``. Image
    ids start at 1; annotation ids are ``(image_id - 1) * captions_per_image +
    k + 1``. ``info`` holds the generator parameters, no date.
``scenes.parquet``
    The true objects, one row per object:

    ============  =======  ================================================
    image_id      int64    the image's COCO id
    object_index  int32    0-based, objects ordered left to right
    split         string   ``train`` | ``val`` | ``test``
    shape         string   one of ``SHAPES``
    colour        string   one of ``COLOURS``
    size          string   one of ``SIZES``
    x             float32  centre, fraction of the width (0 = left)
    y             float32  centre, fraction of the height (0 = top)
    bbox_w        float32  bounding-square side, fraction of the width
    bbox_h        float32  bounding-square side, fraction of the height
    ============  =======  ================================================

    Centres are multiples of 1/1024, so the float32 columns give back exactly
    the :class:`SceneObject` the image was drawn from (:func:`read_scenes`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw
from tqdm import tqdm

from components.data.folders import SyntheticDir
from components.data.scene_language import (
    COLOURS,
    MAX_OBJECTS,
    SHAPES,
    SIZES,
    SceneObject,
    reference_captions,
)
from components.io import write_json

# Object colours: saturated, far apart in RGB (no orange: it sits between red
# and yellow, too close to either for a small shape under noise).
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "yellow": (240, 220, 40),
    "green": (40, 180, 60),
    "blue": (40, 90, 230),
    "purple": (150, 60, 200),
    "white": (250, 250, 250),
}
# Half the side of an object's bounding square, as a fraction of the image side:
# at 64 px a small object spans about 11 px, a large one about 19 px.
SIZE_HALF_EXTENT: dict[str, float] = {"small": 0.09, "large": 0.15}

MIN_GAP = 0.04  # free space between two bounding squares (fraction of the side)
MIN_DX = 0.10  # every two centres at least this far apart horizontally
DOMINANCE = 1.5  # for every pair, max(|dx|, |dy|) >= DOMINANCE * min(|dx|, |dy|)
BORDER = 0.02  # free space between an object and the image edge
POSITION_GRID = 1024  # centres are multiples of 1 / POSITION_GRID (exact in float32)

DARK_LEVELS = (15.0, 85.0)  # background grey level, dark backgrounds
LIGHT_LEVELS = (115.0, 150.0)  # background grey level, light ones (white objects are 250)
TINT = 12.0  # per-channel offset of the background from grey, at most
GRADIENT = 20.0  # brightness change across the background, at most
NOISE_STD = (2.0, 8.0)  # per-image range of the Gaussian pixel noise (grey levels)
SUPERSAMPLE = 4  # shapes are drawn at this scale, then box-filtered down (anti-aliasing)
PNG_COMPRESS_LEVEL = 6

_MAX_TRIES = 10_000  # layouts tried per scene before giving up (never reached in practice)

SCENES_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.int64(), nullable=False),
        pa.field("object_index", pa.int32(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("shape", pa.string(), nullable=False),
        pa.field("colour", pa.string(), nullable=False),
        pa.field("size", pa.string(), nullable=False),
        pa.field("x", pa.float32(), nullable=False),
        pa.field("y", pa.float32(), nullable=False),
        pa.field("bbox_w", pa.float32(), nullable=False),
        pa.field("bbox_h", pa.float32(), nullable=False),
    ]
)


# ----------------------------------------------------------------------------
# Scenes
# ----------------------------------------------------------------------------


def pair_is_clear(a: SceneObject, b: SceneObject) -> bool:
    """Whether two objects are apart and their spatial relation is unambiguous.

    Apart: their bounding squares, grown by :data:`MIN_GAP`, do not touch.
    Unambiguous: centres at least :data:`MIN_DX` apart horizontally, and one
    axis dominating the other by :data:`DOMINANCE`.
    """
    dx, dy = abs(a.x - b.x), abs(a.y - b.y)
    reach = SIZE_HALF_EXTENT[a.size] + SIZE_HALF_EXTENT[b.size] + MIN_GAP
    apart = dx >= reach or dy >= reach
    return apart and dx >= MIN_DX and max(dx, dy) >= DOMINANCE * min(dx, dy)


def layout_is_clear(objects: Sequence[SceneObject]) -> bool:
    """:func:`pair_is_clear` for every pair of ``objects``."""
    return all(pair_is_clear(a, b) for k, a in enumerate(objects) for b in objects[k + 1 :])


def _position(rng: np.random.Generator, size: str) -> float:
    """A centre coordinate keeping the object inside the image, on the grid."""
    low = SIZE_HALF_EXTENT[size] + BORDER
    return round(rng.uniform(low, 1.0 - low) * POSITION_GRID) / POSITION_GRID


def sample_scene(rng: np.random.Generator, *, max_objects: int = 3) -> list[SceneObject]:
    """Draw one scene: 1 to ``max_objects`` objects, non-overlapping.

    Args:
        rng: Source of every choice.
        max_objects: Largest object count, 1 to ``MAX_OBJECTS`` (3); the count
            is uniform over ``1..max_objects``.

    Returns:
        list[SceneObject]: Objects ordered left to right, satisfying
        :func:`layout_is_clear`.
    """
    if not 1 <= max_objects <= MAX_OBJECTS:
        raise ValueError(f"max_objects must be in 1..{MAX_OBJECTS}, got {max_objects}")
    n = int(rng.integers(1, max_objects + 1))
    kinds = [
        (SHAPES[rng.integers(len(SHAPES))], COLOURS[rng.integers(len(COLOURS))], SIZES[rng.integers(len(SIZES))])
        for _ in range(n)
    ]
    # Rejection sampling: uniform over clear layouts. Three large objects are
    # the hardest case, accepted about 1.5% of the time.
    for _ in range(_MAX_TRIES):
        objects = [SceneObject(shape, colour, size, x=_position(rng, size), y=_position(rng, size))
                   for shape, colour, size in kinds]
        if layout_is_clear(objects):
            return sorted(objects, key=lambda o: o.x)
    raise RuntimeError(f"no clear layout found for {kinds} in {_MAX_TRIES} tries")


# ----------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------


def _background(side: int, rng: np.random.Generator) -> np.ndarray:
    """A tinted grey linear gradient, ``(side, side, 3)`` float32 grey levels."""
    low, high = DARK_LEVELS if rng.random() < 0.5 else LIGHT_LEVELS
    start = rng.uniform(low, high) + rng.uniform(-TINT, TINT, size=3)  # (3,)
    end = start + rng.uniform(-GRADIENT, GRADIENT)  # (3,)
    angle = rng.uniform(0.0, 2.0 * math.pi)
    coords = (np.arange(side, dtype=np.float32) + 0.5) / side - 0.5  # (side,)
    t = math.cos(angle) * coords[None, :] + math.sin(angle) * coords[:, None]  # (side, side)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)  # 0..1 along the direction
    return (start + t[..., None] * (end - start)).astype(np.float32)  # (side, side, 3)


def _draw_object(draw: ImageDraw.ImageDraw, obj: SceneObject, side: int) -> None:
    """Draw ``obj`` filled with its colour on a canvas ``side`` pixels wide."""
    cx, cy, h = obj.x * side, obj.y * side, SIZE_HALF_EXTENT[obj.size] * side
    fill = COLOUR_RGB[obj.colour]
    if obj.shape == "circle":
        draw.ellipse((cx - h, cy - h, cx + h, cy + h), fill=fill)
    elif obj.shape == "square":
        draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=fill)
    elif obj.shape == "triangle":  # apex up, base along the bottom of the box
        draw.polygon([(cx, cy - h), (cx + h, cy + h), (cx - h, cy + h)], fill=fill)
    elif obj.shape == "cross":  # a plus sign, arms 0.36 of the box wide
        arm = 0.36 * h
        draw.rectangle((cx - h, cy - arm, cx + h, cy + arm), fill=fill)
        draw.rectangle((cx - arm, cy - h, cx + arm, cy + h), fill=fill)
    else:
        raise ValueError(f"unknown shape {obj.shape!r}; expected one of {SHAPES}")


def render_scene(objects: Sequence[SceneObject], *, image_size: int, rng: np.random.Generator) -> Image.Image:
    """Render a scene: gradient background, anti-aliased shapes, pixel noise.

    Args:
        objects: The scene.
        image_size: Side of the square image in pixels.
        rng: Source of the background and the noise.

    Returns:
        PIL.Image.Image: RGB, ``image_size`` x ``image_size``.
    """
    side = image_size * SUPERSAMPLE
    background = np.clip(np.rint(_background(image_size, rng)), 0, 255).astype(np.uint8)  # (H, W, 3)
    # Upscaled by pixel repetition, so the box filter below gives it back unchanged.
    canvas = Image.fromarray(background, "RGB").resize((side, side), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(canvas)
    for obj in objects:
        _draw_object(draw, obj, side)
    pixels = np.asarray(canvas.reduce(SUPERSAMPLE), dtype=np.float32)  # (H, W, 3), box filter
    noisy = pixels + rng.normal(0.0, rng.uniform(*NOISE_STD), size=pixels.shape)
    return Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8), "RGB")


# ----------------------------------------------------------------------------
# Dataset files
# ----------------------------------------------------------------------------


def _split_sizes(num_images: int, val_fraction: float, test_fraction: float) -> dict[str, int]:
    if not (0.0 <= val_fraction < 1.0 and 0.0 <= test_fraction < 1.0 and val_fraction + test_fraction < 1.0):
        raise ValueError(
            f"val_fraction ({val_fraction}) and test_fraction ({test_fraction}) must be in [0, 1) "
            "and leave some images for train"
        )
    n_val, n_test = round(num_images * val_fraction), round(num_images * test_fraction)
    return {"train": num_images - n_val - n_test, "val": n_val, "test": n_test}


def write_synthetic_coco(
    out_dir: str | os.PathLike,
    *,
    num_images: int,
    image_size: int,
    seed: int,
    captions_per_image: int = 5,
    max_objects: int = 3,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    progress: bool = True,
) -> dict[str, Path]:
    """Generate the dataset into ``out_dir`` (layout in the module docstring).

    Writes in place; the caller makes the output atomic (``components.io.atomic_dir``).

    Args:
        out_dir: Folder to write into (created if missing; best empty).
        num_images: How many images, all splits together.
        image_size: Side of every image in pixels.
        seed: Non-negative; the same seed gives byte-identical files.
        captions_per_image: Reference captions per image.
        max_objects: Largest object count per image, 1 to 3.
        val_fraction: Share of images in the val split (rounded).
        test_fraction: Share of images in the test split (rounded).
        progress: Show a tqdm progress bar.

    Returns:
        dict[str, Path]: ``images_dir``, ``train``, ``val``, ``test`` (the
        annotation files) and ``scenes`` (the Parquet table).
    """
    if num_images < 1 or image_size < 8 or captions_per_image < 1 or seed < 0:
        raise ValueError(
            f"need num_images >= 1, image_size >= 8, captions_per_image >= 1, seed >= 0; got "
            f"{num_images}, {image_size}, {captions_per_image}, {seed}"
        )
    if not 1 <= max_objects <= MAX_OBJECTS:
        raise ValueError(f"max_objects must be in 1..{MAX_OBJECTS}, got {max_objects}")
    sizes = _split_sizes(num_images, val_fraction, test_fraction)
    splits = [name for name, count in sizes.items() for _ in range(count)]  # split of image id k + 1

    folder = SyntheticDir(out_dir)
    images_dir = folder.images
    images_dir.mkdir(parents=True, exist_ok=True)
    folder.annotations.mkdir(parents=True, exist_ok=True)

    coco = {name: {"images": [], "annotations": []} for name in sizes}
    rows: dict[str, list] = {field.name: [] for field in SCENES_SCHEMA}
    for image_id in tqdm(range(1, num_images + 1), desc="synthetic images", disable=not progress):
        rng = np.random.default_rng([seed, image_id])
        objects = sample_scene(rng, max_objects=max_objects)
        captions = reference_captions(objects, rng, n=captions_per_image)
        image = render_scene(objects, image_size=image_size, rng=rng)

        file_name = f"{image_id:06d}.png"
        image.save(images_dir / file_name, format="PNG", compress_level=PNG_COMPRESS_LEVEL, optimize=False)
        split = splits[image_id - 1]
        coco[split]["images"].append(
            {"id": image_id, "file_name": file_name, "width": image_size, "height": image_size}
        )
        coco[split]["annotations"].extend(
            {"id": (image_id - 1) * captions_per_image + k + 1, "image_id": image_id, "caption": caption}
            for k, caption in enumerate(captions)
        )
        for index, obj in enumerate(objects):
            extent = 2.0 * SIZE_HALF_EXTENT[obj.size]
            for name, value in zip(
                SCENES_SCHEMA.names,
                (image_id, index, split, obj.shape, obj.colour, obj.size, obj.x, obj.y, extent, extent),
            ):
                rows[name].append(value)

    files: dict[str, Path] = {"images_dir": images_dir}
    for split, content in coco.items():
        info = {
            "description": "capsynth synthetic shapes",
            "version": "1.0",
            "contributor": "capsynth",
            "url": "",
            "split": split,
            "generator": {
                "seed": seed,
                "num_images": num_images,
                "image_size": image_size,
                "captions_per_image": captions_per_image,
                "max_objects": max_objects,
                "val_fraction": val_fraction,
                "test_fraction": test_fraction,
            },
        }
        files[split] = folder.captions(split)
        write_json(files[split], {"info": info, "licenses": [], **content})

    files["scenes"] = folder.scenes
    pq.write_table(pa.table(rows, schema=SCENES_SCHEMA), files["scenes"])
    return files


def read_scenes(path: str | os.PathLike) -> dict[int, list[SceneObject]]:
    """Read ``scenes.parquet`` back into the true objects of every image.

    Args:
        path: The table written by :func:`write_synthetic_coco`.

    Returns:
        dict[int, list[SceneObject]]: Image id -> objects, left to right.
    """
    table = pq.read_table(path, columns=["image_id", "object_index", "shape", "colour", "size", "x", "y"])
    scenes: dict[int, list[tuple[int, SceneObject]]] = {}
    for row in table.to_pylist():
        obj = SceneObject(row["shape"], row["colour"], row["size"], x=row["x"], y=row["y"])
        scenes.setdefault(row["image_id"], []).append((row["object_index"], obj))
    return {image_id: [obj for _, obj in sorted(objs, key=lambda p: p[0])] for image_id, objs in scenes.items()}
