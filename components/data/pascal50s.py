"""PASCAL-50S: 1000 PASCAL VOC images with 50 sentences each (Vedantam et al. 2015, CIDEr).

As distributed on the CIDEr project page (``pascal50S.mat``), the file is a
MATLAB v5 ``.mat`` holding a 1x1000 struct array ``train_sent_final`` with the
fields

* ``name``: the image, as the URL of the UIUC Pascal Sentences copy (Rashtchian
  et al. 2010), e.g. ``http://.../2008_000032.jpg``;
* ``sentences``: a 1x50 cell array of char, the reference sentences.

(Sources: public code reading the file, e.g. jasmainak/specificity
``scripts/io/restructure_rama_dataset.m`` uses ``train_sent_final(i).name``
and ``train_sent_final(i).sentences{j}``; Python readers take field 0 as the
image URL and field 1 as the sentences.) The reference file shipped with the
CIDEr MATLAB code (vrama91/cider-matlab ``data/pascal50S.mat``) uses another
layout, a struct array ``refs`` with fields ``image`` (the image name) and
``sent`` (cell array of char); it is read as well. Either variable may use
either pair of field names.

* ``image_id``: the entry's position in the struct array, from 1 (MATLAB's
  linear order), stable for a given file;
* path: ``images_dir/<basename>``, where ``<basename>`` is the last ``/`` part
  of a URL (``2008_000032.jpg``, as in VOC's ``JPEGImages``); a plain name is
  joined as it is (``prepare`` refuses one that resolves outside
  ``images_dir``);
* split: ``source.split`` for every image. PASCAL-50S is an evaluation set,
  so set ``split: test`` for it in ``params.yaml`` (``AnnotationSource``
  defaults to ``train``, which this loader cannot tell apart from a choice).

An entry whose image field is not text makes the file unreadable; a sentence
that is not text is ``Skip("bad_annotation", ...)``; an entry repeating an
earlier entry's image file is ``Skip("bad_annotation", ...)`` with all its
sentences (its id is still used up, so later ids do not move).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.io

from components.data.coco import annotation_path, assemble, check_split
from components.data.schema import (
    DatasetFormatError,
    Skip,
    SourceCaption,
    SourceDataset,
    SourceImage,
)
from components.data.sources import AnnotationSource

VARIABLES = ("train_sent_final", "refs")
"""The struct arrays looked for, in this order (dataset file, CIDEr code's file)."""
IMAGE_FIELDS = ("name", "image")
SENTENCE_FIELDS = ("sentences", "sent")


def load_pascal50s(
    sources: Sequence[AnnotationSource], *, split_file: str | None = None
) -> SourceDataset:
    """Load ``pascal50S.mat`` file(s).

    Args:
        sources: One entry per ``.mat`` file, with the folder holding the VOC
            images (``VOCdevkit/VOC2010/JPEGImages``); ``source.split`` is
            every image's split (use ``test``).
        split_file: Not supported; must be None.

    Returns:
        Images numbered from 1 in file order, their sentences raw in order.

    Raises:
        DatasetFormatError: A file is missing, not a MATLAB v5 file, or lacks
            the struct array / its fields; or two files share an image id
            (ids restart at 1 per file, so load one file per dataset).
        ValueError: ``split_file`` is given, or a split is not one of SPLITS.
    """
    if split_file is not None:
        raise ValueError(
            f"PASCAL-50S has no split file; prepare.split_file must be unset, got {split_file!r}"
        )
    parts: list[tuple[str, list[SourceImage], list[SourceCaption]]] = []
    skipped: list[Skip] = []
    for index, source in enumerate(sources):
        path = annotation_path(source, index)
        split = check_split(source.split, index)
        images, captions = _read_file(path, source.images_dir, split, skipped)
        parts.append((path, images, captions))
    return assemble("pascal50s", parts, skipped)


def _read_file(
    path: str, images_dir: str, split: str, skipped: list[Skip]
) -> tuple[list[SourceImage], list[SourceCaption]]:
    try:
        # Unsqueezed records: shapes stay regular (a 1x1 cell is still an array).
        mat = scipy.io.loadmat(path, squeeze_me=False, struct_as_record=True)
    except NotImplementedError as e:  # scipy's answer to v7.3 (HDF5) files
        raise DatasetFormatError(
            f"{path}: MATLAB v7.3 (HDF5) files are not supported; re-save it with "
            f"save(..., '-v7') ({e})"
        ) from e
    except Exception as e:  # scipy raises ValueError, MatReadError, TypeError...
        raise DatasetFormatError(f"{path}: not a readable MATLAB .mat file ({e})") from e

    variable = next((v for v in VARIABLES if v in mat), None)
    if variable is None:
        found = ", ".join(k for k in mat if not k.startswith("__")) or "none"
        raise DatasetFormatError(
            f"{path}: no variable {' or '.join(VARIABLES)} (found: {found})"
        )
    records = mat[variable]
    fields = records.dtype.names if isinstance(records, np.ndarray) else None
    if not fields:
        raise DatasetFormatError(f"{path}: variable '{variable}' is not a struct array")
    image_field = next((f for f in IMAGE_FIELDS if f in fields), None)
    sentence_field = next((f for f in SENTENCE_FIELDS if f in fields), None)
    for field, choices in ((image_field, IMAGE_FIELDS), (sentence_field, SENTENCE_FIELDS)):
        if field is None:
            raise DatasetFormatError(
                f"{path}: struct '{variable}' lacks field '{choices[0]}' "
                f"(or '{choices[1]}'); its fields are {', '.join(fields)}"
            )

    images: list[SourceImage] = []
    captions: list[SourceCaption] = []
    first_seen: dict[str, int] = {}
    for image_id, record in enumerate(records.ravel(order="F"), start=1):
        where = f"{variable}({image_id}) in {path}"
        name = _text(record[image_field])
        if not name:
            raise DatasetFormatError(
                f"{path}: {variable}({image_id}).{image_field} must be a non-empty string"
            )
        file_name = name.rsplit("/", 1)[-1] if "://" in name else name
        if file_name in first_seen:
            skipped.append(
                Skip(
                    "bad_annotation",
                    where,
                    f"image {file_name} repeats {variable}({first_seen[file_name]}); "
                    "entry and its sentences left out",
                )
            )
            continue
        first_seen[file_name] = image_id
        images.append(
            SourceImage.in_dir(image_id, split, annotation_file=path, images_dir=images_dir,
                               file_name=file_name)
        )
        for j, cell in enumerate(_cells(record[sentence_field]), start=1):
            sentence = _text(cell)
            if sentence is None:
                skipped.append(
                    Skip(
                        "bad_annotation",
                        f"{variable}({image_id}).{sentence_field}{{{j}}} in {path}",
                        f"not text: {cell!r}",
                    )
                )
            else:
                captions.append(SourceCaption(image_id, sentence))
    return images, captions


def _text(value: Any) -> str | None:
    """A MATLAB char row as loaded unsqueezed (``array(['abc'])``) to ``str``.

    ``None`` for anything else (numbers, nested cells, multi-row char arrays).
    """
    if isinstance(value, str):
        return value
    if isinstance(value, np.ndarray) and value.dtype.kind == "U":
        if value.size == 0:  # MATLAB '' loads as an empty array
            return ""
        if value.size == 1:
            return str(value.ravel()[0])
    return None


def _cells(value: Any) -> list[Any]:
    """The elements of a cell array in MATLAB's (column-major) order.

    A bare char array stands for a single sentence.
    """
    if isinstance(value, np.ndarray) and value.dtype == object:
        return list(value.ravel(order="F"))
    return [value]
