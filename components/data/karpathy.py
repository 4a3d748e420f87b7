"""Karpathy's ``dataset_{flickr8k,flickr30k,coco}.json`` (Karpathy & Fei-Fei 2015).

The file carries its own split::

    {"dataset": "flickr8k",
     "images": [{"filename": "1000268201_693b08cb0e.jpg",
                 "filepath": "val2014",          # COCO only
                 "imgid": 0, "cocoid": 391895,   # cocoid: COCO only
                 "split": "train" | "val" | "test" | "restval",
                 "sentids": [0, 1, ...],
                 "sentences": [{"raw": "A child in a pink dress ...",
                                "tokens": [...], "imgid": 0, "sentid": 0}]}]}

* ``image_id`` is ``cocoid`` when present (so COCO ids stay COCO ids), else
  ``imgid``; the split is the file's, ``restval`` → ``train``
  (``AnnotationSource.split`` is not used);
* the caption is ``raw``, untouched (``tokens`` is Karpathy's own lower-cased
  tokenization; ``prepare`` normalizes ``raw`` itself);
* the path is ``images_dir/filepath/filename``, or ``images_dir/filename``
  when there is no ``filepath``; images are not opened here, and ``prepare``
  refuses a path that resolves outside ``images_dir``.

An image entry lacking ``filename``, ``split``, ``sentences`` or an id, or with
an unknown split, makes the file unreadable (:class:`DatasetFormatError`); a
sentence lacking ``raw`` is ``Skip("bad_annotation", ...)``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from components.data.coco import (
    annotation_path,
    assemble,
    is_int,
    karpathy_split,
    read_json,
)
from components.data.schema import (
    DatasetFormatError,
    Skip,
    SourceCaption,
    SourceDataset,
    SourceImage,
)
from components.data.sources import AnnotationSource


def load_karpathy(
    sources: Sequence[AnnotationSource], *, split_file: str | None = None
) -> SourceDataset:
    """Load one or more of Karpathy's ``dataset_*.json`` files.

    Args:
        sources: One entry per file, with the folder its images are in.
        split_file: Not supported (the split is in the file); must be None.

    Returns:
        The images sorted by id, their ``raw`` sentences in file order. The
        name is the files' ``dataset`` field when they agree, else
        ``"karpathy"``.

    Raises:
        DatasetFormatError: A file is missing or unreadable as a whole, or two
            files list the same image id.
        ValueError: ``split_file`` is given.
    """
    if split_file is not None:
        raise ValueError(
            "Karpathy's dataset_*.json files carry their own split; "
            f"prepare.split_file must be unset for them, got {split_file!r}"
        )
    parts: list[tuple[str, list[SourceImage], list[SourceCaption]]] = []
    skipped: list[Skip] = []
    names: set[str] = set()
    for index, source in enumerate(sources):
        path = annotation_path(source, index)
        name, images, captions = _read_file(path, source.images_dir, skipped)
        names.add(name)
        parts.append((path, images, captions))
    name = names.pop() if len(names) == 1 else "karpathy"
    return assemble(name, parts, skipped)


def _read_file(
    path: str, images_dir: str, skipped: list[Skip]
) -> tuple[str, list[SourceImage], list[SourceCaption]]:
    data = read_json(path)
    if not isinstance(data, dict):
        raise DatasetFormatError(
            f"{path}: expected a JSON object at the top level, found {type(data).__name__}"
        )
    if "images" not in data:
        raise DatasetFormatError(f"{path}: missing top-level field 'images'")
    if not isinstance(data["images"], list):
        raise DatasetFormatError(f"{path}: top-level field 'images' must be a list")
    name = data.get("dataset")
    name = name if isinstance(name, str) and name else "karpathy"

    images: list[SourceImage] = []
    captions: list[SourceCaption] = []
    first_seen: dict[int, int] = {}
    for k, entry in enumerate(data["images"]):
        where = f"{path}: images[{k}]"
        if not isinstance(entry, dict):
            raise DatasetFormatError(f"{where} is not a JSON object")
        for field in ("filename", "split", "sentences"):
            if field not in entry:
                raise DatasetFormatError(f"{where} lacks field '{field}'")
        id_field = "cocoid" if "cocoid" in entry else "imgid"
        if id_field not in entry:
            raise DatasetFormatError(f"{where} lacks field 'imgid' (and 'cocoid')")
        image_id = entry[id_field]
        if not is_int(image_id):
            raise DatasetFormatError(
                f"{where}: field '{id_field}' must be an integer, got {image_id!r}"
            )
        if image_id in first_seen:
            raise DatasetFormatError(
                f"{where}: image id {image_id} ('{id_field}') is listed twice "
                f"(also images[{first_seen[image_id]}])"
            )
        first_seen[image_id] = k
        filename, filepath = entry["filename"], entry.get("filepath")
        if not isinstance(filename, str) or not filename:
            raise DatasetFormatError(
                f"{where}: field 'filename' must be a non-empty string, got {filename!r}"
            )
        if filepath is not None and not isinstance(filepath, str):
            raise DatasetFormatError(f"{where}: field 'filepath' must be a string")
        file_name = os.path.join(filepath, filename) if filepath else filename
        split = karpathy_split(entry["split"], where)
        if not isinstance(entry["sentences"], list):
            raise DatasetFormatError(f"{where}: field 'sentences' must be a list")
        images.append(
            SourceImage.in_dir(image_id, split, annotation_file=path, images_dir=images_dir,
                               file_name=file_name)
        )

        for j, sentence in enumerate(entry["sentences"]):
            if isinstance(sentence, dict) and "sentid" in sentence:
                item = f"sentence id {sentence['sentid']} of image {image_id} in {path}"
            else:
                item = f"images[{k}].sentences[{j}] (image {image_id}) in {path}"
            if not isinstance(sentence, dict):
                skipped.append(Skip("bad_annotation", item, "not a JSON object"))
            elif "raw" not in sentence:
                skipped.append(Skip("bad_annotation", item, "lacks field raw"))
            elif not isinstance(sentence["raw"], str):
                skipped.append(
                    Skip("bad_annotation", item, f"'raw' must be a string, got {sentence['raw']!r}")
                )
            else:
                captions.append(SourceCaption(image_id, sentence["raw"]))
    return name, images, captions
