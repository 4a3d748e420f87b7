"""prepare_dataset: the bad-input rules, the tables' schema and the vocabulary."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from components.data.images import BadImageError, load_rgb
from components.data.loaders import load_dataset
from components.data.prepare import prepare_dataset
from components.data.schema import (
    CAPTIONS_SCHEMA,
    IMAGES_SCHEMA,
    DatasetFormatError,
    Skip,
    SourceCaption,
    SourceDataset,
    SourceImage,
)
from tests.fixtures_formats import (
    karpathy_entry,
    write_coco,
    write_image,
    write_karpathy,
    write_pascal50s,
)


def _write_images(folder):
    """One image per case; returns {case: path}."""
    folder.mkdir()
    rgb = np.zeros((8, 10, 3), np.uint8)
    rgb[:, :5] = (255, 0, 0)
    paths = {}
    paths["rgb"] = folder / "rgb.png"
    Image.fromarray(rgb).save(paths["rgb"])
    paths["gray"] = folder / "gray.png"
    Image.fromarray(rgb[..., 0]).save(paths["gray"])
    paths["cmyk"] = folder / "cmyk.jpg"
    Image.fromarray(rgb).convert("CMYK").save(paths["cmyk"])
    paths["rgba"] = folder / "rgba.png"
    rgba = np.zeros((8, 10, 4), np.uint8)  # fully transparent: must become white
    Image.fromarray(rgba).save(paths["rgba"])
    paths["truncated"] = folder / "truncated.png"
    paths["truncated"].write_bytes(paths["rgb"].read_bytes()[:40])
    paths["not_image"] = folder / "text.jpg"
    paths["not_image"].write_text("not an image")
    paths["missing"] = folder / "missing.png"
    return {k: str(v) for k, v in paths.items()}


@pytest.fixture
def dataset(tmp_path):
    paths = _write_images(tmp_path / "img")
    images, captions = [], []
    for i, case in enumerate(paths, start=1):
        images.append(SourceImage(i, paths[case], "train" if i % 2 else "test"))
        captions.append(SourceCaption(i, f"A red {case} shape."))
        captions.append(SourceCaption(i, "Un café rouge à gauche"))
    nocap = tmp_path / "img" / "nocap.png"
    Image.new("RGB", (4, 4)).save(nocap)
    images.append(SourceImage(100, str(nocap), "val"))
    captions.append(SourceCaption(100, "  ?! "))  # empty after normalization
    captions.append(SourceCaption(1, "one two three four five six seven"))
    return SourceDataset("fixture", images, captions, [Skip("unknown_image", "annotation 9", "image 999")])


def test_skip_rule_counts_every_case(dataset, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    report = prepare_dataset(dataset, out, on_bad_image="skip", min_word_count=1,
                             max_caption_length=5, progress=False)
    assert report["skipped_counts"] == {
        "corrupt_image": 2, "missing_image": 1, "no_captions": 1, "empty_caption": 1, "unknown_image": 1,
    }
    assert report["converted_modes"] == {"CMYK": 1, "L": 1, "RGBA": 1}
    assert report["counts"]["images_kept"] == 4
    assert report["counts"]["captions_truncated"] == 1
    assert report["counts"]["captions_folded_to_ascii"] == 4
    images = pq.read_table(out / "images.parquet")
    captions = pq.read_table(out / "captions.parquet")
    assert images.schema.equals(IMAGES_SCHEMA) and captions.schema.equals(CAPTIONS_SCHEMA)
    assert images.column("image_id").to_pylist() == [1, 2, 3, 4]
    assert images.column("mode").to_pylist() == ["RGB", "L", "CMYK", "RGBA"]
    assert (images.column("width").to_pylist(), images.column("height").to_pylist()) == ([10] * 4, [8] * 4)
    vocab = json.loads((out / "vocab.json").read_text())
    assert vocab["tokens"][:4] == ["<pad>", "<start>", "<end>", "<unk>"]
    rows = captions.to_pylist()
    assert {r["caption"] for r in rows} >= {"un cafe rouge a gauche", "one two three four five"}
    for r in rows:
        assert r["token_ids"][0] == 1 and r["token_ids"][-1] == 2 and r["length"] == len(r["token_ids"])
        words = [vocab["tokens"][t] for t in r["token_ids"][1:-1]]
        if r["split"] == "train":
            assert words == r["caption"].split()
    assert len(report["skipped"]) == sum(report["skipped_counts"].values())


def test_vocab_comes_from_train_split_only(dataset, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    prepare_dataset(dataset, out, min_word_count=1, max_caption_length=20, progress=False)
    tokens = json.loads((out / "vocab.json").read_text())["tokens"]
    assert "rgb" in tokens and "cmyk" in tokens  # train images 1, 3
    assert "gray" not in tokens and "rgba" not in tokens  # test images 2, 4


def _real_style(tmp_path):
    paths = _write_images(tmp_path / "img")
    images = [SourceImage(1, paths["rgb"], "train"), SourceImage(2, paths["gray"], "train")]
    captions = [SourceCaption(1, "A man's T-shirt, in the U.S."), SourceCaption(1, "They don't see the café!"),
                SourceCaption(2, "A red circle left of a blue square.")]
    return SourceDataset("real", images, captions, [])


def _caption_texts(out):
    return pq.read_table(out / "captions.parquet").column("caption").to_pylist()


def test_vocab_is_built_from_the_evaluation_ptb_tokens(tmp_path, monkeypatch):
    from components.data import ptb

    calls = []
    java = ptb.java_ptb_tokenize
    monkeypatch.setattr(ptb, "java_ptb_tokenize", lambda caps, **kw: calls.append(len(caps)) or java(caps, **kw))
    source = _real_style(tmp_path)
    for run in ("first", "again"):
        out = tmp_path / run
        out.mkdir()
        report = prepare_dataset(source, out, min_word_count=1, progress=False, ptb_cache=tmp_path / "cache")
        assert _caption_texts(out) == ["a man 's t-shirt in the u.s.", "they do n't see the cafe",
                                       "a red circle left of a blue square"]
        vocab = json.loads((out / "vocab.json").read_text())
        assert {"'s", "n't", "t-shirt", "u.s."} <= set(vocab["tokens"])
        assert report["tokenizer"] == vocab["tokenizer"] == ("ptb_java" if java_on_path() else "ptb_python")
    assert calls == ([3] if java_on_path() else [])  # one call for the dataset; the rerun reads the cache


def java_on_path() -> bool:
    import shutil

    return shutil.which("java") is not None


def test_simple_tokenizer_keeps_the_legacy_tokens(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    source = _real_style(tmp_path)
    report = prepare_dataset(source, out, min_word_count=1, progress=False, tokenizer="simple")
    assert _caption_texts(out) == ["a man s t shirt in the u s", "they don t see the cafe",
                                   "a red circle left of a blue square"]
    assert report["tokenizer"] == json.loads((out / "vocab.json").read_text())["tokenizer"] == "simple"
    with pytest.raises(ValueError, match="tokenizer"):
        prepare_dataset(source, out, tokenizer="nltk", progress=False)


def test_fail_rule_names_the_file(dataset, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(BadImageError, match=r"truncated\.png: corrupt image"):
        prepare_dataset(dataset, out, on_bad_image="fail", progress=False)


def test_unknown_split_and_no_training_data_fail(tmp_path):
    paths = _write_images(tmp_path / "img")
    bad_split = SourceDataset("x", [SourceImage(1, paths["rgb"], "dev")], [SourceCaption(1, "a b")])
    with pytest.raises(DatasetFormatError, match="split 'dev'"):
        prepare_dataset(bad_split, tmp_path, progress=False)
    no_train = SourceDataset("x", [SourceImage(1, paths["rgb"], "test")], [SourceCaption(1, "a b")])
    with pytest.raises(DatasetFormatError, match="no usable training caption"):
        prepare_dataset(no_train, tmp_path, progress=False)


def test_load_rgb_converts_every_mode(dataset):
    for img in dataset.images[:4]:
        rgb = load_rgb(img.path)
        assert rgb.mode == "RGB" and rgb.size == (10, 8)
    assert np.asarray(load_rgb(dataset.images[3].path)).min() == 255  # transparent → white
    assert np.asarray(load_rgb(dataset.images[0].path, size=4)).shape == (4, 4, 3)


# --- images confined to their source's images_dir ---------------------------

FORMATS = ("coco", "karpathy", "pascal50s")
INSIDE = ("ok", "link_in")  # a plain file; a symlink to another file inside
OUTSIDE = ("dotdot", "absolute", "link_out")  # `..`, an absolute name, a symlink out


def _confinement_source(root, fmt, cases):
    """Write dataset ``fmt`` under ``root`` with one image per case; return (source, {case: file_name}).

    ``secret.jpg`` is a valid image outside ``images_dir``, which every
    ``OUTSIDE`` case reaches; image ids follow ``cases`` from 1, one caption each.
    """
    secret = write_image(root / "outside" / "secret.jpg", seed=7)
    images_dir = root / fmt / ("JPEGImages" if fmt == "pascal50s" else "images")
    names = {
        "ok": "ok.jpg",
        "link_in": "link_in.jpg",
        "dotdot": os.path.relpath(secret, images_dir),
        "absolute": str(secret),
        "link_out": "link_out.jpg",
    }
    names = {case: names[case] for case in cases}
    captions = {case: f"a photo of case {case}" for case in cases}
    if fmt == "coco":
        images = [{"id": i, "file_name": names[c]} for i, c in enumerate(cases, start=1)]
        annotations = [{"id": i, "image_id": i, "caption": captions[c]}
                       for i, c in enumerate(cases, start=1)]
        source = write_coco(root / fmt, subset="images", images=images, annotations=annotations,
                            image_files=False)
    elif fmt == "karpathy":
        entries = [karpathy_entry(i, names[c], "train", [captions[c]], first_sentid=i)
                   for i, c in enumerate(cases, start=1)]
        source = write_karpathy(root / fmt, entries=entries, image_folder="images",
                                image_files=False)
    else:
        source = write_pascal50s(root / fmt, entries=[(names[c], [captions[c]]) for c in cases],
                                 image_files=False, split="train")
    assert source.images_dir == str(images_dir)
    write_image(images_dir / "ok.jpg", seed=1)
    write_image(images_dir / "sub" / "other.jpg", seed=2)
    if "link_in" in cases:
        os.symlink(os.path.join("sub", "other.jpg"), images_dir / "link_in.jpg")
    if "link_out" in cases:
        os.symlink(secret, images_dir / "link_out.jpg")
    return source, names


@pytest.mark.parametrize("fmt", FORMATS)
def test_skip_rule_refuses_paths_outside_images_dir(fmt, tmp_path):
    cases = INSIDE + OUTSIDE
    source, names = _confinement_source(tmp_path, fmt, cases)
    out = tmp_path / "out"
    out.mkdir()
    report = prepare_dataset(load_dataset(fmt, [source]), out, on_bad_image="skip", progress=False)

    assert report["skipped_counts"] == {"outside_root": len(OUTSIDE)}
    refused = {s["item"]: s["detail"] for s in report["skipped"] if s["kind"] == "outside_root"}
    assert set(refused) == {os.path.join(source.images_dir, names[c]) for c in OUTSIDE}
    for case in OUTSIDE:
        detail = refused[os.path.join(source.images_dir, names[case])]
        assert repr(names[case]) in detail and source.file in detail and source.images_dir in detail
    # the symlink whose target stays inside is accepted, alongside the plain file
    ids = pq.read_table(out / "images.parquet").column("image_id").to_pylist()
    assert ids == [cases.index(c) + 1 for c in INSIDE]
    assert report["counts"]["images_kept"] == len(INSIDE)


@pytest.mark.parametrize("case", OUTSIDE)
@pytest.mark.parametrize("fmt", FORMATS)
def test_fail_rule_names_annotation_file_name_and_images_dir(fmt, case, tmp_path):
    source, names = _confinement_source(tmp_path, fmt, ("ok", case))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(BadImageError, match="outside root") as err:
        prepare_dataset(load_dataset(fmt, [source]), out, on_bad_image="fail", progress=False)
    assert err.value.kind == "outside_root"
    message = str(err.value)
    assert source.file in message and repr(names[case]) in message and source.images_dir in message
    assert not (out / "images.parquet").exists()


@pytest.mark.parametrize("fmt", FORMATS)
def test_symlinks_staying_inside_are_accepted_even_with_fail(fmt, tmp_path):
    source, _ = _confinement_source(tmp_path, fmt, INSIDE)
    out = tmp_path / "out"
    out.mkdir()
    report = prepare_dataset(load_dataset(fmt, [source]), out, on_bad_image="fail", progress=False)
    assert report["skipped_counts"] == {}
    assert report["counts"]["images_kept"] == len(INSIDE)


@pytest.mark.parametrize("fmt", ("coco", "karpathy"))
def test_images_dir_that_is_a_symlink_is_resolved_too(fmt, tmp_path):
    source, names = _confinement_source(tmp_path, fmt, INSIDE + ("dotdot",))
    linked = tmp_path / "linked_images"
    os.symlink(source.images_dir, linked)
    source = dataclasses.replace(source, images_dir=str(linked))
    out = tmp_path / "out"
    out.mkdir()
    report = prepare_dataset(load_dataset(fmt, [source]), out, on_bad_image="skip", progress=False)
    # `..` is taken from the real folder, as the file system does: still outside
    assert report["skipped_counts"] == {"outside_root": 1}
    assert report["skipped"][0]["item"] == os.path.join(str(linked), names["dotdot"])
    assert report["counts"]["images_kept"] == len(INSIDE)


def test_uris_and_images_without_origin_are_not_confined(tmp_path):
    paths = _write_images(tmp_path / "img")
    uri = SourceImage.in_dir(2, "train", annotation_file="captions.json",
                             images_dir="s3://bucket/images", file_name="../elsewhere.jpg")
    assert uri.path == "s3://bucket/images/../elsewhere.jpg" and uri.origin.file_name == "../elsewhere.jpg"
    assert uri == SourceImage(2, uri.path, "train")  # the origin is not part of identity
    no_origin = SourceImage(1, paths["rgb"], "train")  # made by code: no root to check
    dataset = SourceDataset("x", [no_origin, uri], [SourceCaption(1, "a b"), SourceCaption(2, "c d")])
    out = tmp_path / "out"
    out.mkdir()
    report = prepare_dataset(dataset, out, on_bad_image="skip", progress=False)
    assert report["skipped_counts"] == {"missing_image": 1}  # not outside_root: URIs are out of scope
    assert report["counts"]["images_kept"] == 1
