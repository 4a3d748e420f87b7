"""Tiny datasets written in each real on-disk format, for tests.

Each ``write_*`` function writes one annotation file in its real layout plus
tiny image files into a folder (a pytest ``tmp_path``) and returns the
:class:`AnnotationSource` that points at them. The contents are the module
constants below, so a test can state what a loader must find; pass your own
entries to write a variant (a bad annotation, a missing field...).

* COCO captions (Chen et al. 2015): ``annotations/captions_{train,val}2014.json``
  and ``{train,val}2014/`` image folders; ``write_karpathy_split_file`` writes
  Karpathy's ``dataset_coco.json`` for them.
* Karpathy's Flickr8k: ``dataset_flickr8k.json`` and ``Flicker8k_Dataset/``.
* PASCAL-50S: ``pascal50S.mat`` (struct array ``train_sent_final`` with
  fields ``name``, an image URL, and ``sentences``, a cell array) and
  ``JPEGImages/``.
* Pascal-50S judged pairs: ``pyCIDErConsensus/pair_pascal.mat`` (``new_input``,
  ``category``, ``new_data``) and ``consensus_pascal.mat`` (``triplets``).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
from PIL import Image

from components.data.sources import AnnotationSource


def write_image(
    path: str | Path, *, size: tuple[int, int] = (8, 6), mode: str = "RGB", seed: int = 0
) -> Path:
    """Write a tiny noise image; the format follows the extension (.jpg, .png)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    width, height = size
    channels = {"L": 1, "RGB": 3, "RGBA": 4, "CMYK": 4}[mode]
    pixels = rng.integers(0, 256, size=(height, width, channels), dtype=np.uint8)
    image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode=mode)
    image.save(path)
    return path


def write_corrupt_image(path: str | Path) -> Path:
    """Write a file with an image extension that no decoder can open."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    return path


# --- MS COCO captions -------------------------------------------------------

# Per subset: images (deliberately not in id order) and annotations, as in
# captions_{train,val}2014.json. One PNG among the JPEGs, sizes all different.
COCO_IMAGES: dict[str, list[dict[str, Any]]] = {
    "train2014": [
        {"id": 25, "file_name": "COCO_train2014_000000000025.jpg", "width": 9, "height": 7},
        {"id": 9, "file_name": "COCO_train2014_000000000009.jpg", "width": 8, "height": 6},
        {"id": 30, "file_name": "COCO_train2014_000000000030.png", "width": 5, "height": 10},
    ],
    "val2014": [
        {"id": 73, "file_name": "COCO_val2014_000000000073.jpg", "width": 12, "height": 4},
        {"id": 42, "file_name": "COCO_val2014_000000000042.jpg", "width": 6, "height": 6},
        {"id": 74, "file_name": "COCO_val2014_000000000074.jpg", "width": 7, "height": 5},
    ],
}
COCO_ANNOTATIONS: dict[str, list[dict[str, Any]]] = {
    "train2014": [
        {"id": 48, "image_id": 9, "caption": "A giraffe standing next to a tree."},
        {"id": 67, "image_id": 25, "caption": "Two dogs  play in the SNOW"},
        {"id": 126, "image_id": 9, "caption": "  a tall giraffe eating leaves\n"},
        {"id": 200, "image_id": 30, "caption": "A red bus on a city street."},
        {"id": 201, "image_id": 25, "caption": "Dogs running through snow."},
    ],
    "val2014": [
        {"id": 500, "image_id": 42, "caption": "A plate of food with broccoli."},
        {"id": 501, "image_id": 73, "caption": "A man riding a motorcycle."},
        {"id": 502, "image_id": 74, "caption": "A cat sleeping on a couch."},
        {"id": 503, "image_id": 42, "caption": "Broccoli and rice on a plate."},
    ],
}

# Karpathy's split of the COCO images above: 74 is not listed (dropped with a
# split file) and 999999 is listed but not in the caption files (ignored).
KARPATHY_COCO_SPLITS: dict[int, str] = {
    9: "train",
    25: "restval",
    30: "test",
    42: "val",
    73: "restval",
    999999: "test",
}


def write_coco(
    root: str | Path,
    *,
    subset: str = "train2014",
    split: str = "train",
    images: Sequence[Mapping[str, Any]] | None = None,
    annotations: Sequence[Any] | None = None,
    image_files: bool = True,
) -> AnnotationSource:
    """Write ``root/annotations/captions_<subset>.json`` and ``root/<subset>/``.

    Args:
        root: The dataset folder.
        subset: ``train2014`` or ``val2014`` (which defaults to use), or any
            name when ``images`` and ``annotations`` are given.
        split: The returned source's split.
        images: The ``images`` entries (default ``COCO_IMAGES[subset]``).
        annotations: The ``annotations`` entries (default
            ``COCO_ANNOTATIONS[subset]``); may hold deliberately bad entries.
        image_files: Also write an image file per entry that has
            ``file_name`` (sized by ``width`` / ``height`` when present).
    """
    root = Path(root)
    images = copy.deepcopy(list(images if images is not None else COCO_IMAGES[subset]))
    annotations = copy.deepcopy(
        list(annotations if annotations is not None else COCO_ANNOTATIONS[subset])
    )
    images_dir = root / subset
    images_dir.mkdir(parents=True, exist_ok=True)
    for k, image in enumerate(images):
        image.setdefault("license", 1)
        image.setdefault("date_captured", "2013-11-14 16:28:13")
        if image_files and "file_name" in image:
            size = (image.get("width", 8), image.get("height", 6))
            write_image(images_dir / image["file_name"], size=size, seed=k)
    data = {
        "info": {"description": "capsynth test fixture", "year": 2014, "version": "1.0"},
        "licenses": [{"id": 1, "name": "fixture", "url": ""}],
        "images": images,
        "annotations": annotations,
    }
    file = root / "annotations" / f"captions_{subset}.json"
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps(data))
    return AnnotationSource(file=str(file), images_dir=str(images_dir), split=split)


def write_karpathy_split_file(
    root: str | Path, splits: Mapping[int, str] | None = None
) -> Path:
    """Write Karpathy's ``dataset_coco.json`` listing ``{cocoid: split}``.

    Entries have the real fields (``filepath``, ``filename``, ``imgid``,
    ``sentences``...); the sentences are placeholders.
    """
    splits = KARPATHY_COCO_SPLITS if splits is None else splits
    subset_of = {img["id"]: subset for subset, imgs in COCO_IMAGES.items() for img in imgs}
    entries = []
    for imgid, (cocoid, split) in enumerate(splits.items()):
        subset = subset_of.get(cocoid, "val2014")
        entries.append(
            {
                "filepath": subset,
                "filename": f"COCO_{subset}_{cocoid:012d}.jpg",
                "imgid": imgid,
                "cocoid": cocoid,
                "split": split,
                "sentids": [imgid],
                "sentences": [
                    {"tokens": ["placeholder"], "raw": "Placeholder.", "imgid": imgid,
                     "sentid": imgid}
                ],
            }
        )
    path = Path(root) / "dataset_coco.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": entries, "dataset": "coco"}))
    return path


# --- Karpathy's dataset_flickr8k.json ---------------------------------------

# (imgid, filename, split, raw sentences); not in id order, one restval.
FLICKR8K_IMAGES: list[tuple[int, str, str, list[str]]] = [
    (2, "1001773457_577c3a7d70.jpg", "test", ["A black dog and a spotted dog are fighting"]),
    (0, "1000268201_693b08cb0e.jpg", "train", [
        "A child in a pink dress is climbing up a set of stairs in an entry way .",
        "A girl going into a wooden building .",
    ]),
    (1, "1001773457_577c3a7d71.jpg", "val", ["A little girl in a pink dress ."]),
    (3, "1002674143_1b742ab4b8.jpg", "restval",
     ["Two dogs on pavement moving toward each other ."]),
]


def karpathy_entry(
    imgid: int,
    filename: str,
    split: str,
    sentences: Sequence[str],
    *,
    first_sentid: int = 0,
    **extra: Any,
) -> dict[str, Any]:
    """One ``images`` entry of Karpathy's format (``extra``: filepath, cocoid)."""
    sentids = list(range(first_sentid, first_sentid + len(sentences)))
    return {
        "filename": filename,
        "imgid": imgid,
        "split": split,
        "sentids": sentids,
        "sentences": [
            {"tokens": raw.lower().split(), "raw": raw, "imgid": imgid, "sentid": sentid}
            for raw, sentid in zip(sentences, sentids)
        ],
        **extra,
    }


def write_karpathy(
    root: str | Path,
    *,
    dataset: str = "flickr8k",
    entries: Sequence[Mapping[str, Any]] | None = None,
    image_folder: str = "Flicker8k_Dataset",
    image_files: bool = True,
) -> AnnotationSource:
    """Write ``root/dataset_<dataset>.json`` and its images under ``image_folder``.

    ``entries`` defaults to ``FLICKR8K_IMAGES`` through :func:`karpathy_entry`;
    images go to ``image_folder/filepath/filename``.
    """
    root = Path(root)
    if entries is None:
        entries, sentid = [], 0
        for imgid, filename, split, sentences in FLICKR8K_IMAGES:
            entries.append(karpathy_entry(imgid, filename, split, sentences, first_sentid=sentid))
            sentid += len(sentences)
    images_dir = root / image_folder
    images_dir.mkdir(parents=True, exist_ok=True)
    if image_files:
        for k, entry in enumerate(entries):
            if "filename" in entry:
                write_image(images_dir / entry.get("filepath", "") / entry["filename"], seed=k)
    file = root / f"dataset_{dataset}.json"
    file.write_text(json.dumps({"images": list(entries), "dataset": dataset}))
    return AnnotationSource(file=str(file), images_dir=str(images_dir))


# --- PASCAL-50S -------------------------------------------------------------

PASCAL_URL = "http://vision.cs.uiuc.edu/pascal-sentences/{category}/{name}"

# (image URL, sentences) in file order; the real file has 50 per image. One
# image has a single sentence (a 1x1 cell), one an empty sentence.
PASCAL50S_ENTRIES: list[tuple[str, list[str]]] = [
    (PASCAL_URL.format(category="dog", name="2008_000032.jpg"),
     ["A dog lying on a rug.", "brown dog sleeping ", "A dog rests indoors"]),
    (PASCAL_URL.format(category="aeroplane", name="2008_000008.jpg"),
     ["An airplane on the runway."]),
    (PASCAL_URL.format(category="bus", name="2008_000100.jpg"),
     ["A yellow bus parked.", "", "School bus by the road."]),
]


def write_pascal50s(
    root: str | Path,
    *,
    entries: Sequence[tuple[Any, Sequence[Any]]] | None = None,
    variable: str = "train_sent_final",
    fields: tuple[str, str] = ("name", "sentences"),
    image_files: bool = True,
    split: str = "test",
) -> AnnotationSource:
    """Write ``root/pascal50S.mat`` (MATLAB v5) and ``root/JPEGImages/``.

    The variable is a 1xN struct array with an image field (a char row) and
    a sentences field (a 1xK cell array of char rows), as in the dataset;
    ``variable="refs", fields=("image", "sent")`` gives the layout of the
    CIDEr MATLAB code's reference file.
    """
    root = Path(root)
    entries = PASCAL50S_ENTRIES if entries is None else entries
    records = np.zeros((1, len(entries)), dtype=[(fields[0], object), (fields[1], object)])
    for k, (name, sentences) in enumerate(entries):
        cells = np.empty((1, len(sentences)), dtype=object)  # a MATLAB cell array
        for j, sentence in enumerate(sentences):
            cells[0, j] = sentence
        records[0, k] = (name, cells)
    file = root / "pascal50S.mat"
    file.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(file, {variable: records})
    images_dir = root / "JPEGImages"
    images_dir.mkdir(parents=True, exist_ok=True)
    if image_files:
        for k, (name, _) in enumerate(entries):
            if isinstance(name, str) and name:
                write_image(images_dir / name.rsplit("/", 1)[-1], seed=k)
    return AnnotationSource(file=str(file), images_dir=str(images_dir), split=split)


# --- Pascal-50S judged pairs (pyCIDErConsensus/) ------------------------------

PASCAL50S_DOG, PASCAL50S_PLANE = "2008_000032.jpg", "2008_000008.jpg"
PASCAL50S_REFERENCES = {
    PASCAL50S_DOG: ("a dog on a rug", "a brown dog sleeps", "the dog is sleeping", "a dog lies on the floor"),
    PASCAL50S_PLANE: ("a plane on a runway", "a white airplane parked", "the plane is on the ground",
                      "an airplane at the airport"),
}


@dataclasses.dataclass(frozen=True)
class JudgedPairSpec:
    """One pair of ``pair_pascal.mat`` and its triplets of ``consensus_pascal.mat``.

    ``choices`` has one letter per triplet, the candidate its person chose
    (``a`` or ``b``); the triplets' references are ``references`` in order
    (one per triplet). ``swapped`` lists the triplets that store the
    candidates as (B, C) = (b, a).
    """

    image: str
    category: int  # 1 HC, 2 HI, 3 HM, 4 MM
    a: str
    b: str
    choices: str
    swapped: tuple[int, ...] = ()

    @property
    def references(self) -> tuple[str, ...]:
        return PASCAL50S_REFERENCES[self.image][:len(self.choices)]


# 8 pairs, 2 per kind, 4 triplets each (the release: 4,000 pairs, 48 triplets each). The accuracies they
# give are worked by hand in tests/unit/test_pascal50s.py.
PASCAL50S_PAIRS: list[JudgedPairSpec] = [
    JudgedPairSpec(PASCAL50S_DOG, 1, "A dog sleeps on a rug.", "a cat on a sofa", "aaab"),
    JudgedPairSpec(PASCAL50S_DOG, 2, "a brown dog", "a plane on a runway", "aabb"),  # a human tie
    JudgedPairSpec(PASCAL50S_DOG, 3, "A dog.", "a is on the", "aaaa"),
    JudgedPairSpec(PASCAL50S_DOG, 4, "a brown dog", "on a the", "abbb"),
    JudgedPairSpec(PASCAL50S_PLANE, 1, "a big bird in the sky", "a white airplane on the ground", "bbbb"),
    JudgedPairSpec(PASCAL50S_PLANE, 2, "a plane on the runway", "a brown dog sleeps", "abbb", swapped=(1, 3)),
    JudgedPairSpec(PASCAL50S_PLANE, 3, "The airplane is parked.", "a dog on a rug", "aaab"),
    JudgedPairSpec(PASCAL50S_PLANE, 4, "two cats play", "red hot sun", "aaab"),
]
# new_data per category: the candidates' sources (1-5 a system, 6 a human caption of the image, 7 of another)
PASCAL50S_SOURCES = {1: (6, 6), 2: (6, 7), 3: (6, 1), 4: (1, 2)}


def _cell(text: Any) -> np.ndarray:
    """A 1x1 MATLAB cell holding ``text``."""
    cell = np.empty((1, 1), dtype=object)
    cell[0, 0] = text
    return cell


def pascal50s_triplets(pairs: Sequence[JudgedPairSpec]) -> list[tuple[Any, Any, Any, Any]]:
    """The ``(A, B, C, D)`` entries of ``triplets`` for ``pairs``: D is 1 when B was chosen, else -1.

    The first triplet of each pair pads its sentences with a space (readers compare them stripped).
    """
    rows = []
    for pair in pairs:
        for j, (chosen, ref) in enumerate(zip(pair.choices, pair.references)):
            first, second = (pair.b, pair.a) if j in pair.swapped else (pair.a, pair.b)
            pad = " " if j == 0 else ""
            picked = pair.a if chosen == "a" else pair.b
            rows.append((ref + pad, first + pad, second, 1.0 if picked == first else -1.0))
    return rows


def write_pascal50s_consensus(
    root: str | Path,
    *,
    pairs: Sequence[JudgedPairSpec] | None = None,
    new_input: Sequence[tuple[Any, Any, Any]] | None = None,
    category: Sequence[Any] | None = None,
    new_data: Any = "derive",
    triplets: Sequence[tuple[Any, Any, Any, Any]] | None = None,
    omit: Sequence[str] = (),
) -> Path:
    """Write ``root/pyCIDErConsensus/pair_pascal.mat`` and ``consensus_pascal.mat`` (MATLAB v5).

    The layout public readers index: ``new_input`` a 1xP struct array of three
    char fields (image, A, B); ``category`` 1xP doubles; ``new_data`` Px2
    doubles; ``triplets`` a 1x(P*K) struct array of fields A, B, C (1x1 cells
    of char) and D (a double). Each variable comes from ``pairs`` unless given
    raw (to write a bad file); ``new_data=None`` and ``omit`` leave variables out.

    Returns:
        The ``pyCIDErConsensus`` folder.
    """
    pairs = PASCAL50S_PAIRS if pairs is None else pairs
    folder = Path(root) / "pyCIDErConsensus"
    folder.mkdir(parents=True, exist_ok=True)
    new_input = [(p.image, p.a, p.b) for p in pairs] if new_input is None else new_input
    inputs = np.zeros((1, len(new_input)), dtype=[("vid", object), ("a", object), ("b", object)])
    for i, entry in enumerate(new_input):
        inputs[0, i] = entry
    pair_vars: dict[str, Any] = {
        "new_input": inputs,
        "category": np.array([[p.category for p in pairs] if category is None else list(category)], dtype=float),
    }
    if isinstance(new_data, str):
        new_data = np.array([PASCAL50S_SOURCES[p.category] for p in pairs], dtype=float)
    if new_data is not None:
        pair_vars["new_data"] = new_data
    rows = pascal50s_triplets(pairs) if triplets is None else triplets
    records = np.zeros((1, len(rows)), dtype=[("A", object), ("B", object), ("C", object), ("D", object)])
    for j, (a, b, c, d) in enumerate(rows):
        records[0, j] = (_cell(a), _cell(b), _cell(c), d)
    for file, variables in (("pair_pascal.mat", pair_vars), ("consensus_pascal.mat", {"triplets": records})):
        scipy.io.savemat(folder / file, {k: v for k, v in variables.items() if k not in omit})
    return folder
