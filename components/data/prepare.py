"""From a loader's :class:`SourceDataset` to the prepared tables, vocab and report.

The rules for bad input, one per case (the README repeats them):

=====================================  ==========================================
case                                   what happens
=====================================  ==========================================
malformed annotation file / field      the stage fails, naming the file and field
missing image file                     ``on_bad_image``: skip and count, or fail
corrupt or truncated image             ``on_bad_image``: skip and count, or fail
image path outside ``images_dir``      ``on_bad_image``: skip and count, or fail
grayscale / palette / CMYK / alpha     kept, converted to RGB when read; counted
annotation naming an unknown image     skipped and counted (by the loader)
caption with no letter or digit        skipped and counted
non-ASCII caption                      tokens folded to ASCII (``text.to_ascii``); counted
caption longer than max length         cut to ``max_caption_length``; counted
image left with no caption             skipped and counted
=====================================  ==========================================

An image path is outside ``images_dir`` when, resolved (``os.path.realpath``,
following ``..``, absolute names and symlinks; ``images_dir`` is resolved too),
it does not lie under the resolved ``images_dir`` of its annotation source
(:func:`check_inside_images_dir`). So ``../x.jpg``, ``/elsewhere/x.jpg`` and a
symlink inside ``images_dir`` pointing outside it are refused (skip kind
``outside_root``); a symlink whose target stays inside, or an ``images_dir``
that is itself a symlink, is fine. URIs (``://``) are not checked.

Tokens (``tokenizer``): ``ptb`` (default) is pycocoevalcap's PTB tokenization,
the one the caption metrics use (:mod:`components.data.ptb`: Java once per
dataset and cached, else the pure-Python equivalent), each token then folded
to ASCII; ``simple`` is the legacy normalizer :func:`text.tokenize`. On
synthetic captions both give the same tokens. The report's ``tokenizer`` says
which ran (``ptb_java``, ``ptb_python`` or ``simple``); the vocab records it too.

Nothing here writes outside ``out_dir`` (and ``ptb_cache``); the stage makes that folder atomic.
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import os
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from components.data import ptb, text
from components.data.folders import PreparedDir
from components.data.images import BadImageError, ImageInfo, inspect_image
from components.data.schema import (
    CAPTIONS_SCHEMA,
    IMAGES_SCHEMA,
    SPLITS,
    DatasetFormatError,
    Skip,
    SourceDataset,
    SourceImage,
)


def check_inside_images_dir(image: SourceImage) -> None:
    """Refuse an image whose path resolves outside its source's ``images_dir``.

    The one confinement rule for every loader: ``image.path`` and
    ``image.origin.images_dir`` are both resolved with ``os.path.realpath``
    (``..``, absolute names and symlinks followed) and the path must lie under
    the folder. A symlink inside ``images_dir`` pointing outside it is
    refused; one whose target stays inside is accepted, and so is an
    ``images_dir`` that is itself a symlink. Not checked: URIs (a path with
    ``://``) and images without an origin (made by code, not by a loader).

    Raises:
        BadImageError: ``outside_root``, naming the annotation file, the
            image's ``file_name`` and ``images_dir``.
    """
    origin = image.origin
    if origin is None or "://" in image.path:
        return
    root = os.path.realpath(origin.images_dir)
    target = os.path.realpath(image.path)
    if os.path.commonpath([root, target]) != root:
        raise BadImageError(
            "outside_root",
            image.path,
            f"file_name {origin.file_name!r} in {origin.annotation_file} resolves to {target}, "
            f"outside images_dir {origin.images_dir}",
        )


def tokenize_captions(captions: list[str], *, tokenizer: str = "ptb",
                      ptb_cache: str | os.PathLike | None = None) -> tuple[list[list[str]], str]:
    """Each caption's tokens and the tokenizer that made them (see the module docstring).

    ``ptb``: :func:`ptb.tokenize_captions` (one Java call, cached; pure Python
    without Java), each token folded to ASCII and split on any space left in it
    (``5 1/2`` is one PTB token), empty ones dropped. ``simple``: :func:`text.tokenize`.
    """
    if tokenizer == "simple":
        return [text.tokenize(c) for c in captions], "simple"
    tokens, used = ptb.tokenize_captions(captions, cache_dir=ptb_cache)
    return [ptb.fold_tokens(words) for words in tokens], used


def _inspect_all(images: list[SourceImage], num_workers: int,
                 progress: bool) -> list[ImageInfo | BadImageError]:
    """Check every image's root, then decode it once, in threads (PIL releases the GIL)."""

    def check(image: SourceImage) -> ImageInfo | BadImageError:
        try:
            check_inside_images_dir(image)
            return inspect_image(image.path)
        except BadImageError as err:
            return err

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
        return list(tqdm(pool.map(check, images), total=len(images), desc="prepare: checking images",
                         unit="img", disable=not progress, mininterval=1.0))


def prepare_dataset(
    source: SourceDataset,
    out_dir: str | os.PathLike,
    *,
    on_bad_image: str = "skip",
    min_word_count: int = 1,
    max_caption_length: int = 20,
    num_workers: int = 4,
    store_path: Callable[[str], str] = lambda p: p,
    progress: bool = True,
    tokenizer: str = "ptb",
    ptb_cache: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Validate ``source`` and write the images and captions tables and the vocab (:class:`PreparedDir`).

    Args:
        source: What a loader returned.
        out_dir: Existing folder to write into (laid out as a :class:`PreparedDir`).
        on_bad_image: ``"skip"`` to skip and count missing, corrupt and
            outside-``images_dir`` images, ``"fail"`` to stop at the first,
            naming the file (and, outside the root, the annotation file,
            ``file_name`` and ``images_dir``).
        min_word_count: Vocabulary threshold, counted on the train split.
        max_caption_length: Captions are cut to this many words.
        num_workers: Threads that decode images for the check.
        store_path: Maps a loader path to the path written in the table
            (used when images were generated in a temporary folder).
        progress: Show progress bars.
        tokenizer: ``"ptb"`` (the evaluation's PTB tokens, folded to ASCII)
            or ``"simple"`` (the legacy normalizer).
        ptb_cache: Folder caching the Java PTB tokenizer's output (None: no cache).

    Returns:
        The report: counts per case, per split, and every skipped item.

    Raises:
        BadImageError: with ``on_bad_image="fail"``, for the first bad image.
        DatasetFormatError: for an unknown split, or no training caption.
    """
    if on_bad_image not in ("skip", "fail"):
        raise ValueError(f"on_bad_image must be 'skip' or 'fail', got {on_bad_image!r}")
    if tokenizer not in ("ptb", "simple"):
        raise ValueError(f"tokenizer must be 'ptb' or 'simple', got {tokenizer!r}")
    prepared = PreparedDir(out_dir)
    skipped: list[Skip] = list(source.skipped)
    counts: collections.Counter[str] = collections.Counter(
        images_found=len(source.images), captions_found=len(source.captions)
    )
    converted: collections.Counter[str] = collections.Counter()

    for img in source.images:
        if img.split not in SPLITS:
            raise DatasetFormatError(
                f"image {img.image_id} ({img.path}): split '{img.split}' is not one of {SPLITS}"
            )

    # 1. Images: confine each to its images_dir, decode it once; skip or fail on bad ones.
    infos = _inspect_all(source.images, num_workers, progress)
    good: dict[int, tuple[Any, ImageInfo]] = {}
    for img, info in zip(source.images, infos):
        if isinstance(info, BadImageError):
            if on_bad_image == "fail":
                raise info
            skipped.append(Skip(info.kind, img.path, info.detail))
            continue
        if info.needs_conversion:
            converted[info.mode] += 1
        good[img.image_id] = (img, info)

    # 2. Captions: tokenize (all at once), fold to ASCII; drop empty ones and those of dropped images.
    kept = [cap for cap in source.captions if cap.image_id in good]
    if len(kept) < len(source.captions):
        counts["captions_of_skipped_images"] += len(source.captions) - len(kept)
    tokenized, tokenizer_used = tokenize_captions([cap.caption for cap in kept], tokenizer=tokenizer,
                                                  ptb_cache=ptb_cache)
    per_image: dict[int, list[list[str]]] = collections.defaultdict(list)
    for cap, words in zip(kept, tokenized):
        if not cap.caption.isascii():
            counts["captions_folded_to_ascii"] += 1
        if not any(ch.isalnum() for w in words for ch in w):  # nothing but symbols, e.g. '?!'
            skipped.append(Skip("empty_caption", f"image {cap.image_id}", repr(cap.caption)))
            continue
        if len(words) > max_caption_length:
            counts["captions_truncated"] += 1
            words = words[:max_caption_length]
        per_image[cap.image_id].append(words)

    for image_id, (img, _) in list(good.items()):
        if not per_image.get(image_id):
            skipped.append(Skip("no_captions", img.path, f"image {image_id} has no usable caption"))
            del good[image_id]

    # 3. Vocabulary from the training split only.
    train_captions = [w for i, (img, _) in good.items() if img.split == "train" for w in per_image[i]]
    if not train_captions:
        raise DatasetFormatError(
            f"dataset '{source.name}': no usable training caption left "
            f"({len(skipped)} items skipped; see the report)"
        )
    vocab = text.Vocab.build(train_captions, min_word_count=min_word_count,
                             max_caption_length=max_caption_length)

    # 4. Tables, in image_id order.
    image_rows: dict[str, list] = {f.name: [] for f in IMAGES_SCHEMA}
    caption_rows: dict[str, list] = {f.name: [] for f in CAPTIONS_SCHEMA}
    split_counts = {s: collections.Counter() for s in SPLITS}
    caption_id = 0
    for image_id in sorted(good):
        img, info = good[image_id]
        image_rows["image_id"].append(image_id)
        image_rows["path"].append(store_path(img.path))
        image_rows["split"].append(img.split)
        image_rows["width"].append(info.width)
        image_rows["height"].append(info.height)
        image_rows["mode"].append(info.mode)
        split_counts[img.split]["images"] += 1
        for words in per_image[image_id]:
            ids = vocab.encode(words)
            caption_id += 1
            caption_rows["caption_id"].append(caption_id)
            caption_rows["image_id"].append(image_id)
            caption_rows["split"].append(img.split)
            caption_rows["caption"].append(" ".join(words))
            caption_rows["token_ids"].append(ids)
            caption_rows["length"].append(len(ids))
            split_counts[img.split]["captions"] += 1

    pq.write_table(pa.table(image_rows, schema=IMAGES_SCHEMA), prepared.images)
    pq.write_table(pa.table(caption_rows, schema=CAPTIONS_SCHEMA), prepared.captions)
    with open(prepared.vocab, "w") as f:
        json.dump({**vocab.to_json(), "tokenizer": tokenizer_used}, f, indent=2)
        f.write("\n")

    counts["images_kept"] = len(good)
    counts["captions_kept"] = caption_id
    counts["images_converted_to_rgb"] = sum(converted.values())
    skip_counts = collections.Counter(s.kind for s in skipped)
    return {
        "dataset": source.name,
        "on_bad_image": on_bad_image,
        "tokenizer": tokenizer_used,
        "counts": dict(sorted(counts.items())),
        "converted_modes": dict(sorted(converted.items())),
        "skipped_counts": dict(sorted(skip_counts.items())),
        "splits": {s: dict(c) for s, c in split_counts.items()},
        "vocab_size": len(vocab),
        "skipped": [{"kind": s.kind, "item": s.item, "detail": s.detail} for s in skipped],
    }
