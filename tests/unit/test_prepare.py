"""prepare_dataset: the bad-input rules, the tables' schema and the vocabulary."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from components.data.images import BadImageError, load_rgb
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
