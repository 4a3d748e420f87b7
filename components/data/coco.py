"""MS COCO captions: ``captions_*.json`` plus an image folder, read through pycocotools.

Lin et al. 2014 (MS COCO), Chen et al. 2015 (COCO Captions). The caption file
is ``{"images": [{"id", "file_name", ...}], "annotations": [{"id", "image_id",
"caption"}, ...]}``. Karpathy & Fei-Fei 2015 re-split train2014 + val2014 into
113k/5k/5k (``dataset_coco.json``); give that file as ``split_file`` to use it.

What this module decides about a file:

* unreadable as a whole (not found, malformed JSON, no ``images`` or
  ``annotations``, an image entry without ``id`` / ``file_name``, the same
  image id twice): :class:`DatasetFormatError`, naming the file and field;
* one bad annotation (no ``image_id`` or ``caption``, or of the wrong type):
  ``Skip("bad_annotation", ...)``; one naming an image the file does not
  list: ``Skip("unknown_image", ...)``;
* with a split file, an image the split file does not list:
  ``Skip("not_in_split_file", ...)``, and its captions are left out with it.
  Split-file entries that none of the sources holds are ignored (the split
  file covers train2014 and val2014; loading only one of them is fine).

Images are not opened here (``prepare`` validates them): paths are
``os.path.join(source.images_dir, file_name)`` (:meth:`SourceImage.in_dir`),
and ``prepare`` refuses one that resolves outside ``images_dir``.

The small file helpers at the bottom (:func:`annotation_path`,
:func:`read_json`, :func:`check_split`, :func:`assemble`) are shared by the
other loaders of this package.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

from pycocotools.coco import COCO

from components.data.schema import (
    SPLITS,
    DatasetFormatError,
    Skip,
    SourceCaption,
    SourceDataset,
    SourceImage,
)
from components.data.sources import AnnotationSource

KARPATHY_SPLITS = {"train": "train", "val": "val", "test": "test", "restval": "train"}
"""Karpathy's split names to ours. ``restval`` (the val2014 images outside the
5k val and 5k test) is used for training, as in Karpathy & Fei-Fei 2015."""

SPLIT_FILE_KEY = "prepare.split_file"


def load_coco(
    sources: Sequence[AnnotationSource], *, split_file: str | None = None
) -> SourceDataset:
    """Load COCO caption files (e.g. ``captions_train2014.json``) and their images.

    Args:
        sources: One entry per caption file, with the folder its images are in.
            ``source.split`` is every image's split unless ``split_file`` is set.
        split_file: Karpathy's ``dataset_coco.json``; when given, each image's
            split is looked up there by ``cocoid`` (``restval`` becomes
            ``train``) and images it does not list are skipped.

    Returns:
        The images sorted by COCO id, their captions raw in file order.

    Raises:
        DatasetFormatError: A file is missing or unreadable as a whole, or two
            files list the same image id.
        ValueError: A source's ``split`` is not one of ``SPLITS``.
    """
    splits = read_karpathy_split_file(split_file) if split_file is not None else None
    parts: list[tuple[str, list[SourceImage], list[SourceCaption]]] = []
    skipped: list[Skip] = []
    for index, source in enumerate(sources):
        path = annotation_path(source, index)
        default_split = check_split(source.split, index)
        images, captions = _read_captions_file(
            path, source.images_dir, default_split, splits, split_file, skipped
        )
        parts.append((path, images, captions))
    return assemble("coco", parts, skipped)


def read_karpathy_split_file(path: str) -> dict[int, str]:
    """Read Karpathy's ``dataset_coco.json`` into ``{cocoid: split}``, ours.

    Raises:
        DatasetFormatError: The file is missing, malformed, or an entry lacks
            ``cocoid`` / ``split`` or has an unknown split.
    """
    data = read_json(path, key=SPLIT_FILE_KEY)
    entries = _top_level_list(data, "images", path)
    splits: dict[int, str] = {}
    for k, entry in enumerate(entries):
        where = f"{path}: images[{k}]"
        if not isinstance(entry, dict):
            raise DatasetFormatError(f"{where} is not a JSON object")
        for field in ("cocoid", "split"):
            if field not in entry:
                raise DatasetFormatError(f"{where} lacks field '{field}'")
        cocoid = entry["cocoid"]
        if not is_int(cocoid):
            raise DatasetFormatError(f"{where}: field 'cocoid' must be an integer, got {cocoid!r}")
        splits[cocoid] = karpathy_split(entry["split"], where)
    return splits


def _read_captions_file(
    path: str,
    images_dir: str,
    default_split: str,
    splits: dict[int, str] | None,
    split_file: str | None,
    skipped: list[Skip],
) -> tuple[list[SourceImage], list[SourceCaption]]:
    data = read_json(path)
    image_entries = _top_level_list(data, "images", path)
    annotation_entries = _top_level_list(data, "annotations", path)

    # Validate ourselves, then hand pycocotools only well-formed entries: its
    # createIndex would KeyError on an annotation without "id" or "image_id".
    index_images: list[dict[str, Any]] = []
    first_seen: dict[int, int] = {}
    for k, entry in enumerate(image_entries):
        where = f"{path}: images[{k}]"
        if not isinstance(entry, dict):
            raise DatasetFormatError(f"{where} is not a JSON object")
        for field in ("id", "file_name"):
            if field not in entry:
                raise DatasetFormatError(f"{where} lacks field '{field}'")
        image_id, file_name = entry["id"], entry["file_name"]
        if not is_int(image_id):
            raise DatasetFormatError(f"{where}: field 'id' must be an integer, got {image_id!r}")
        if not isinstance(file_name, str) or not file_name:
            raise DatasetFormatError(
                f"{where}: field 'file_name' must be a non-empty string, got {file_name!r}"
            )
        if image_id in first_seen:
            raise DatasetFormatError(
                f"{where}: image id {image_id} is listed twice "
                f"(also images[{first_seen[image_id]}])"
            )
        first_seen[image_id] = k
        index_images.append({"id": image_id, "file_name": file_name})

    index_annotations: list[dict[str, Any]] = []
    for k, ann in enumerate(annotation_entries):
        if isinstance(ann, dict) and "id" in ann:
            item = f"annotation id {ann['id']} in {path}"
        else:
            item = f"annotations[{k}] in {path}"
        if not isinstance(ann, dict):
            skipped.append(Skip("bad_annotation", item, "not a JSON object"))
            continue
        missing = [field for field in ("image_id", "caption") if field not in ann]
        if missing:
            skipped.append(Skip("bad_annotation", item, f"lacks field {', '.join(missing)}"))
            continue
        image_id, caption = ann["image_id"], ann["caption"]
        if not is_int(image_id):
            skipped.append(
                Skip("bad_annotation", item, f"'image_id' must be an integer, got {image_id!r}")
            )
            continue
        if not isinstance(caption, str):
            skipped.append(
                Skip("bad_annotation", item, f"'caption' must be a string, got {caption!r}")
            )
            continue
        if image_id not in first_seen:
            skipped.append(
                Skip("unknown_image", item, f"image_id {image_id} is not listed in 'images'")
            )
            continue
        # Our own running id: the file's annotation ids need not be unique.
        index_annotations.append({"id": k, "image_id": image_id, "caption": caption})

    coco = COCO()
    coco.dataset = {"images": index_images, "annotations": index_annotations}
    with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress
        coco.createIndex()

    images: list[SourceImage] = []
    captions: list[SourceCaption] = []
    for image_id in sorted(coco.getImgIds()):
        (info,) = coco.loadImgs(image_id)
        if splits is None:
            split = default_split
        elif image_id in splits:
            split = splits[image_id]
        else:
            skipped.append(
                Skip(
                    "not_in_split_file",
                    f"image id {image_id} ({info['file_name']}) in {path}",
                    f"not listed in split file {split_file}; its captions are left out too",
                )
            )
            continue
        images.append(
            SourceImage.in_dir(image_id, split, annotation_file=path, images_dir=images_dir,
                               file_name=info["file_name"])
        )
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image_id])):  # file order
            captions.append(SourceCaption(image_id, ann["caption"]))
    return images, captions


def _top_level_list(data: Any, field: str, path: str) -> list[Any]:
    if not isinstance(data, dict):
        raise DatasetFormatError(
            f"{path}: expected a JSON object at the top level, found {type(data).__name__}"
        )
    if field not in data:
        raise DatasetFormatError(f"{path}: missing top-level field '{field}'")
    if not isinstance(data[field], list):
        raise DatasetFormatError(
            f"{path}: top-level field '{field}' must be a list, found {type(data[field]).__name__}"
        )
    return data[field]


# --- helpers shared by the loaders of this package ---------------------------


def is_int(value: Any) -> bool:
    """True for a JSON / Python integer (``bool`` excluded)."""
    return isinstance(value, int) and not isinstance(value, bool)


def annotation_path(source: AnnotationSource, index: int) -> str:
    """Return ``source.file`` if it is an existing file, else a helpful error.

    Raises:
        DatasetFormatError: naming the path and the params key to set
            (``prepare.sources[index].file``); its ``__cause__`` is a
            :class:`FileNotFoundError`.
    """
    if not os.path.isfile(source.file):
        what = "is a folder, not a file" if os.path.isdir(source.file) else "not found"
        raise DatasetFormatError(
            f"annotation file {source.file} {what}; set prepare.sources[{index}].file "
            "to an existing annotation file"
        ) from FileNotFoundError(source.file)
    return source.file


def read_json(path: str, *, key: str | None = None) -> Any:
    """Parse a JSON file; any problem becomes a :class:`DatasetFormatError`.

    Args:
        path: The file.
        key: The params key that names ``path``, quoted when it does not exist.
    """
    if not os.path.isfile(path):
        hint = f"; set {key} to an existing file" if key else ""
        raise DatasetFormatError(f"{path} not found{hint}") from FileNotFoundError(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetFormatError(
            f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}"
        ) from e
    except UnicodeDecodeError as e:
        raise DatasetFormatError(f"{path}: not UTF-8 text ({e})") from e


def check_split(split: str, index: int) -> str:
    """Return ``split`` if it is one of ``SPLITS``.

    Raises:
        ValueError: naming ``prepare.sources[index].split`` and the choices.
    """
    if split not in SPLITS:
        raise ValueError(
            f"prepare.sources[{index}].split must be one of {', '.join(SPLITS)}, got {split!r}"
        )
    return split


def karpathy_split(split: Any, where: str) -> str:
    """Map a Karpathy split name to ours (``restval`` → ``train``)."""
    if split not in KARPATHY_SPLITS:
        raise DatasetFormatError(
            f"{where}: field 'split' must be one of {', '.join(KARPATHY_SPLITS)}, got {split!r}"
        )
    return KARPATHY_SPLITS[split]


def assemble(
    name: str,
    parts: Iterable[tuple[str, list[SourceImage], list[SourceCaption]]],
    skipped: list[Skip],
) -> SourceDataset:
    """Merge per-file results into one dataset in a deterministic order.

    Args:
        name: The dataset's name.
        parts: ``(file, images, captions)`` per annotation file; image ids are
            already unique within each file.
        skipped: Everything left out, in the order found.

    Returns:
        Images sorted by ``image_id``; captions sorted by ``image_id``, each
        image's captions in their original order (the sort is stable).

    Raises:
        DatasetFormatError: Two files list the same image id (both named).
    """
    owner: dict[int, str] = {}
    images: list[SourceImage] = []
    captions: list[SourceCaption] = []
    for file, file_images, file_captions in parts:
        for image in file_images:
            if image.image_id in owner:
                raise DatasetFormatError(
                    f"image id {image.image_id} is listed in both {owner[image.image_id]} "
                    f"and {file}"
                )
            owner[image.image_id] = file
        images.extend(file_images)
        captions.extend(file_captions)
    images.sort(key=lambda image: image.image_id)
    captions.sort(key=lambda caption: caption.image_id)
    return SourceDataset(name=name, images=images, captions=captions, skipped=skipped)
