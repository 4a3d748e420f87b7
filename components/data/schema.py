"""The normalized dataset form every loader produces, and the Parquet schemas.

Loaders (COCO, Karpathy/Flickr, Pascal-50S, the synthetic generator's COCO
output) all return a :class:`SourceDataset`: image references plus raw caption
strings, and the problems they found. ``components.data.prepare`` then checks
images, normalizes captions, builds the vocabulary and writes the tables below.

Tables written by the ``prepare`` stage (``data/prepared/``):

``images.parquet``
    ==========  =======  ==================================================
    image_id    int64    unique id (COCO id, or the loader's own numbering)
    path        string   path relative to the working directory, or a URI
    split       string   ``train`` | ``val`` | ``test``
    width       int32    pixels, as stored on disk
    height      int32    pixels, as stored on disk
    mode        string   PIL mode on disk (``RGB``, ``L``, ``CMYK``...); readers
                         always get RGB through ``images.load_rgb``
    ==========  =======  ==================================================

``captions.parquet``
    ==========  ============  ============================================
    caption_id  int64         unique id
    image_id    int64         foreign key into ``images.parquet``
    split       string        the image's split, repeated for convenience
    caption     string        normalized text: ASCII, lower case, words
                              separated by single spaces
    token_ids   list<int32>   ``<start> w1 ... wn <end>``, ids in ``vocab.json``
    length      int32         ``len(token_ids)``
    ==========  ============  ============================================
"""

from __future__ import annotations

import dataclasses
import os

import pyarrow as pa

SPLITS = ("train", "val", "test")

IMAGES_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.int64(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("mode", pa.string(), nullable=False),
    ]
)

CAPTIONS_SCHEMA = pa.schema(
    [
        pa.field("caption_id", pa.int64(), nullable=False),
        pa.field("image_id", pa.int64(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("caption", pa.string(), nullable=False),
        pa.field("token_ids", pa.list_(pa.int32()), nullable=False),
        pa.field("length", pa.int32(), nullable=False),
    ]
)


class DatasetFormatError(ValueError):
    """A dataset file is unreadable as a whole (malformed JSON, a missing field).

    Always fatal, whatever ``on_bad_image`` says: the message names the file
    and, where it applies, the field.
    """


@dataclasses.dataclass(frozen=True)
class ImageOrigin:
    """Where a loader found an image: the annotation file, the entry's name, the folder.

    ``prepare`` uses it to keep the image inside ``images_dir`` (the rule is
    in ``components.data.prepare``) and to name all three when it is not.
    """

    annotation_file: str
    images_dir: str
    file_name: str  # as written in the annotation file (Karpathy: filepath/filename)


@dataclasses.dataclass(frozen=True)
class SourceImage:
    """One image as a loader found it (not yet opened).

    Loaders build it with :meth:`in_dir`, which records the :class:`ImageOrigin`;
    an image made without one (by code, not read from an annotation file) is
    not checked against a root. ``origin`` is provenance, not identity: it
    takes no part in ``==``.
    """

    image_id: int
    path: str  # filesystem path (absolute or relative to the cwd) or URI
    split: str  # one of SPLITS
    origin: ImageOrigin | None = dataclasses.field(default=None, compare=False)

    @classmethod
    def in_dir(
        cls, image_id: int, split: str, *, annotation_file: str, images_dir: str, file_name: str
    ) -> SourceImage:
        """The image ``file_name`` of ``annotation_file``: ``os.path.join(images_dir, file_name)``.

        Nothing is checked here; ``prepare`` refuses a path that resolves
        outside ``images_dir`` (``outside_root``).
        """
        return cls(
            image_id,
            os.path.join(images_dir, file_name),
            split,
            ImageOrigin(annotation_file, images_dir, file_name),
        )


@dataclasses.dataclass(frozen=True)
class SourceCaption:
    """One reference caption, raw, exactly as written in the source file."""

    image_id: int
    caption: str


@dataclasses.dataclass(frozen=True)
class Skip:
    """Something left out, and why. Collected into the prepare report.

    ``kind`` is one of: ``missing_image``, ``corrupt_image``, ``outside_root``
    (an image path that resolves outside its source's ``images_dir``),
    ``unknown_image`` (an annotation naming an image the file does not list),
    ``no_captions``,
    ``empty_caption``, ``bad_annotation`` (an entry lacking a field, skipped),
    ``not_in_split_file`` (a COCO image the Karpathy split file does not list).
    """

    kind: str
    item: str  # the file path, or an annotation / image id
    detail: str = ""


@dataclasses.dataclass
class SourceDataset:
    """What a loader returns: images, raw captions and the problems found."""

    name: str
    images: list[SourceImage]
    captions: list[SourceCaption]
    skipped: list[Skip] = dataclasses.field(default_factory=list)


