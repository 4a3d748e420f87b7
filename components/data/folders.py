"""The ``prepare`` stage's output folder and the synthetic dataset inside it, as objects.

Each object wraps a folder's root and names its files, so the writers
(:func:`components.data.prepare.prepare_dataset`,
:func:`components.data.synthetic.write_synthetic_coco`, ``pipelines.prepare``)
and every reader spell a file name once, here. Import-light on purpose (no
pyarrow, numpy or torch): the stages and ``pipelines.cli`` import it freely.

``prepare``'s folder (``data/prepared/``), :class:`PreparedDir`::

    images.parquet      images table: image_id, path, split, width, height, mode
    captions.parquet    captions table: caption_id, image_id, split, caption, token_ids, length
    vocab.json          vocabulary: tokens, min_word_count, max_caption_length
    synthetic/          with ``prepare.dataset: synthetic`` only: the generated dataset

The synthetic dataset's folder, :class:`SyntheticDir` (the files' content is in
:mod:`components.data.synthetic`)::

    images/{image_id:06d}.png
    annotations/captions_{train,val,test}.json    MS COCO captions format
    scenes.parquet                                the true objects of every image
"""

from __future__ import annotations

import dataclasses
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class SyntheticDir:
    """The folder :func:`~components.data.synthetic.write_synthetic_coco` writes.

    Attributes:
        root: The folder (``<prepared>/synthetic`` in the pipeline); a str is made a Path.
    """

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def images(self) -> Path:
        """Folder of the PNGs, ``{image_id:06d}.png``."""
        return self.root / "images"

    @property
    def annotations(self) -> Path:
        """Folder of the COCO captions files, one per split."""
        return self.root / "annotations"

    def captions(self, split: str) -> Path:
        """The split's COCO captions file, ``annotations/captions_<split>.json``."""
        return self.annotations / f"captions_{split}.json"

    @property
    def scenes(self) -> Path:
        """The true objects, one row per object (``SCENES_SCHEMA``)."""
        return self.root / "scenes.parquet"


@dataclasses.dataclass(frozen=True)
class PreparedDir:
    """The folder the ``prepare`` stage writes (layout in the module docstring).

    Attributes:
        root: The folder (``data/prepared`` in ``dvc.yaml``); a str is made a Path.
    """

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def images(self) -> Path:
        """The images table (``IMAGES_SCHEMA``): the images prepare kept."""
        return self.root / "images.parquet"

    @property
    def captions(self) -> Path:
        """The captions table (``CAPTIONS_SCHEMA``), token ids included."""
        return self.root / "captions.parquet"

    @property
    def vocab(self) -> Path:
        """The vocabulary JSON (``Vocab.to_json``), built on the train split."""
        return self.root / "vocab.json"

    @property
    def synthetic(self) -> SyntheticDir:
        """Where the synthetic dataset is generated (present with ``prepare.dataset: synthetic`` only)."""
        return SyntheticDir(self.root / "synthetic")

    @property
    def scenes(self) -> Path:
        """The synthetic dataset's scenes table: absent for a real dataset."""
        return self.synthetic.scenes
