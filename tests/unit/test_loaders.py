"""Loaders of real caption datasets, on tiny fixtures written in each real format."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from components.data.coco import load_coco
from components.data.karpathy import load_karpathy
from components.data.loaders import LOADERS, load_dataset
from components.data.pascal50s import load_pascal50s
from components.data.schema import (
    DatasetFormatError,
    Skip,
    SourceCaption,
    SourceImage,
)
from components.data.sources import AnnotationSource
from tests.fixtures_formats import (
    COCO_ANNOTATIONS,
    COCO_IMAGES,
    PASCAL_URL,
    karpathy_entry,
    write_coco,
    write_karpathy,
    write_karpathy_split_file,
    write_pascal50s,
)


def pairs(dataset):
    return [(c.image_id, c.caption) for c in dataset.captions]


# --- fixtures themselves ----------------------------------------------------


def test_fixture_images_are_real_and_sized_as_listed(tmp_path):
    source = write_coco(tmp_path)
    for entry in COCO_IMAGES["train2014"]:
        with Image.open(os.path.join(source.images_dir, entry["file_name"])) as image:
            assert image.size == (entry["width"], entry["height"])
            assert image.format == ("PNG" if entry["file_name"].endswith(".png") else "JPEG")


# --- COCO -------------------------------------------------------------------


def test_coco_ids_paths_splits_and_raw_captions(tmp_path, capsys):
    source = write_coco(tmp_path, split="val")
    dataset = load_coco([source])
    train2014 = os.path.join(str(tmp_path), "train2014")

    assert dataset.name == "coco"
    assert dataset.images == [
        SourceImage(9, os.path.join(train2014, "COCO_train2014_000000000009.jpg"), "val"),
        SourceImage(25, os.path.join(train2014, "COCO_train2014_000000000025.jpg"), "val"),
        SourceImage(30, os.path.join(train2014, "COCO_train2014_000000000030.png"), "val"),
    ]
    # Sorted by image id, file order within an image, text untouched.
    assert pairs(dataset) == [
        (9, "A giraffe standing next to a tree."),
        (9, "  a tall giraffe eating leaves\n"),
        (25, "Two dogs  play in the SNOW"),
        (25, "Dogs running through snow."),
        (30, "A red bus on a city street."),
    ]
    assert dataset.skipped == []
    assert capsys.readouterr().out == ""  # pycocotools' progress prints are swallowed


def test_coco_karpathy_split_file_sets_splits_and_drops_unlisted(tmp_path):
    train = write_coco(tmp_path, subset="train2014")
    val = write_coco(tmp_path, subset="val2014", split="val")
    split_file = write_karpathy_split_file(tmp_path)

    dataset = load_coco([val, train], split_file=str(split_file))

    # restval -> train; 74 is not in the split file; 999999 is not in COCO.
    assert [(i.image_id, i.split) for i in dataset.images] == [
        (9, "train"), (25, "train"), (30, "test"), (42, "val"), (73, "train"),
    ]
    assert dataset.images[3].path == os.path.join(
        str(tmp_path), "val2014", "COCO_val2014_000000000042.jpg"
    )
    assert 74 not in {c.image_id for c in dataset.captions}
    assert pairs(dataset)[-3:] == [
        (42, "A plate of food with broccoli."),
        (42, "Broccoli and rice on a plate."),
        (73, "A man riding a motorcycle."),
    ]
    assert [s.kind for s in dataset.skipped] == ["not_in_split_file"]
    assert "image id 74" in dataset.skipped[0].item
    assert val.file in dataset.skipped[0].item


def test_coco_bad_and_unknown_annotations_are_skipped_and_recorded(tmp_path):
    annotations = COCO_ANNOTATIONS["train2014"] + [
        {"id": 300, "image_id": 999, "caption": "A caption for no listed image."},
        {"id": 301, "image_id": 9},
        {"id": 302, "caption": "No image id."},
        {"image_id": 9, "caption": 5},
    ]
    source = write_coco(tmp_path, annotations=annotations)
    dataset = load_coco([source])

    assert len(dataset.captions) == len(COCO_ANNOTATIONS["train2014"])
    assert "A caption for no listed image." not in {c.caption for c in dataset.captions}
    assert [s.kind for s in dataset.skipped] == [
        "unknown_image", "bad_annotation", "bad_annotation", "bad_annotation",
    ]
    assert dataset.skipped[0].item == f"annotation id 300 in {source.file}"
    assert "999" in dataset.skipped[0].detail
    assert "caption" in dataset.skipped[1].detail
    assert "image_id" in dataset.skipped[2].detail
    assert dataset.skipped[3].item == f"annotations[8] in {source.file}"


def test_coco_malformed_json_names_file_and_position(tmp_path):
    path = tmp_path / "captions_train2014.json"
    path.write_text('{"images": [\n  {"id": 1,, "file_name": "a.jpg"}]}')
    with pytest.raises(DatasetFormatError) as err:
        load_coco([AnnotationSource(file=str(path), images_dir=str(tmp_path))])
    assert str(path) in str(err.value)
    assert "line 2 column" in str(err.value)


@pytest.mark.parametrize("field", ["images", "annotations"])
def test_coco_missing_top_level_field_is_named(tmp_path, field):
    source = write_coco(tmp_path)
    data = json.loads(Path(source.file).read_text())
    del data[field]
    with open(source.file, "w") as f:
        json.dump(data, f)
    with pytest.raises(DatasetFormatError, match=f"missing top-level field '{field}'") as err:
        load_coco([source])
    assert source.file in str(err.value)


@pytest.mark.parametrize("field", ["id", "file_name"])
def test_coco_image_lacking_field_is_named(tmp_path, field):
    images = [dict(image) for image in COCO_IMAGES["train2014"]]
    del images[1][field]
    source = write_coco(tmp_path, images=images)
    with pytest.raises(DatasetFormatError, match=rf"images\[1\] lacks field '{field}'") as err:
        load_coco([source])
    assert source.file in str(err.value)


def test_coco_duplicate_image_id_across_files_names_both(tmp_path):
    train = write_coco(tmp_path / "a")
    clash = write_coco(
        tmp_path / "b",
        subset="extra",
        images=[{"id": 25, "file_name": "x.jpg"}],
        annotations=[{"id": 1, "image_id": 25, "caption": "x"}],
    )
    with pytest.raises(DatasetFormatError, match="image id 25") as err:
        load_coco([train, clash])
    assert train.file in str(err.value) and clash.file in str(err.value)


def test_coco_missing_annotation_file_names_path_and_params_key(tmp_path):
    good = write_coco(tmp_path)
    missing = AnnotationSource(file=str(tmp_path / "nope.json"), images_dir=str(tmp_path))
    with pytest.raises(DatasetFormatError) as err:
        load_coco([good, missing])
    assert str(tmp_path / "nope.json") in str(err.value)
    assert "prepare.sources[1].file" in str(err.value)
    assert isinstance(err.value.__cause__, FileNotFoundError)


def test_coco_split_file_problems_are_named(tmp_path):
    source = write_coco(tmp_path)
    with pytest.raises(DatasetFormatError, match="prepare.split_file"):
        load_coco([source], split_file=str(tmp_path / "dataset_coco.json"))
    bad = write_karpathy_split_file(tmp_path, {9: "dev"})
    with pytest.raises(DatasetFormatError, match="'dev'") as err:
        load_coco([source], split_file=str(bad))
    assert str(bad) in str(err.value)


def test_coco_rejects_unknown_source_split(tmp_path):
    source = write_coco(tmp_path, split="training")
    with pytest.raises(ValueError, match=r"prepare.sources\[0\].split"):
        load_coco([source])


# --- Karpathy ---------------------------------------------------------------


def test_karpathy_flickr8k_ids_paths_splits_and_raw_captions(tmp_path):
    source = write_karpathy(tmp_path)
    dataset = load_karpathy([source])
    folder = os.path.join(str(tmp_path), "Flicker8k_Dataset")

    assert dataset.name == "flickr8k"
    assert dataset.images == [
        SourceImage(0, os.path.join(folder, "1000268201_693b08cb0e.jpg"), "train"),
        SourceImage(1, os.path.join(folder, "1001773457_577c3a7d71.jpg"), "val"),
        SourceImage(2, os.path.join(folder, "1001773457_577c3a7d70.jpg"), "test"),
        SourceImage(3, os.path.join(folder, "1002674143_1b742ab4b8.jpg"), "train"),  # restval
    ]
    assert dataset.captions == [
        SourceCaption(
            0, "A child in a pink dress is climbing up a set of stairs in an entry way ."
        ),
        SourceCaption(0, "A girl going into a wooden building ."),
        SourceCaption(1, "A little girl in a pink dress ."),
        SourceCaption(2, "A black dog and a spotted dog are fighting"),
        SourceCaption(3, "Two dogs on pavement moving toward each other ."),
    ]
    assert dataset.skipped == []


def test_karpathy_coco_uses_cocoid_and_filepath(tmp_path):
    entries = [
        karpathy_entry(0, "COCO_val2014_000000391895.jpg", "restval", ["A man on a bike."],
                       filepath="val2014", cocoid=391895),
        karpathy_entry(1, "COCO_train2014_000000000009.jpg", "test", ["Food."],
                       first_sentid=1, filepath="train2014", cocoid=9),
    ]
    source = write_karpathy(tmp_path, dataset="coco", entries=entries, image_folder="coco")
    dataset = load_karpathy([source])
    assert dataset.images == [
        SourceImage(9, os.path.join(str(tmp_path), "coco", "train2014",
                                    "COCO_train2014_000000000009.jpg"), "test"),
        SourceImage(391895, os.path.join(str(tmp_path), "coco", "val2014",
                                         "COCO_val2014_000000391895.jpg"), "train"),
    ]
    assert pairs(dataset) == [(9, "Food."), (391895, "A man on a bike.")]


def test_karpathy_sentence_without_raw_is_skipped(tmp_path):
    entry = karpathy_entry(7, "a.jpg", "train", ["Kept.", "Dropped."], first_sentid=40)
    del entry["sentences"][1]["raw"]
    source = write_karpathy(tmp_path, entries=[entry])
    dataset = load_karpathy([source])
    assert pairs(dataset) == [(7, "Kept.")]
    assert dataset.skipped == [
        Skip("bad_annotation", f"sentence id 41 of image 7 in {source.file}", "lacks field raw")
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda e: e.pop("split"), "lacks field 'split'"),
        (lambda e: e.pop("filename"), "lacks field 'filename'"),
        (lambda e: e.update(split="dev"), "'dev'"),
    ],
)
def test_karpathy_bad_image_entry_is_a_format_error(tmp_path, change, message):
    entry = karpathy_entry(0, "a.jpg", "train", ["A."])
    change(entry)
    source = write_karpathy(tmp_path, entries=[entry], image_files=False)
    with pytest.raises(DatasetFormatError, match=message) as err:
        load_karpathy([source])
    assert source.file in str(err.value)


def test_karpathy_malformed_json_and_missing_images_field(tmp_path):
    path = tmp_path / "dataset_flickr8k.json"
    path.write_text('{"images": [}')
    source = AnnotationSource(file=str(path), images_dir=str(tmp_path))
    with pytest.raises(DatasetFormatError, match="line 1 column 13") as err:
        load_karpathy([source])
    assert str(path) in str(err.value)
    path.write_text('{"dataset": "flickr8k"}')
    with pytest.raises(DatasetFormatError, match="'images'"):
        load_karpathy([source])


def test_karpathy_duplicate_ids_across_files_and_split_file_refused(tmp_path):
    a = write_karpathy(tmp_path / "a")
    b = write_karpathy(tmp_path / "b", dataset="flickr30k")
    with pytest.raises(DatasetFormatError) as err:
        load_karpathy([a, b])
    assert a.file in str(err.value) and b.file in str(err.value)
    with pytest.raises(ValueError, match="split_file"):
        load_karpathy([a], split_file=str(tmp_path / "dataset_coco.json"))


# --- PASCAL-50S -------------------------------------------------------------


def test_pascal50s_ids_paths_split_and_raw_sentences(tmp_path):
    source = write_pascal50s(tmp_path)
    dataset = load_pascal50s([source])
    folder = os.path.join(str(tmp_path), "JPEGImages")

    assert dataset.name == "pascal50s"
    assert dataset.images == [
        SourceImage(1, os.path.join(folder, "2008_000032.jpg"), "test"),
        SourceImage(2, os.path.join(folder, "2008_000008.jpg"), "test"),
        SourceImage(3, os.path.join(folder, "2008_000100.jpg"), "test"),
    ]
    assert pairs(dataset) == [
        (1, "A dog lying on a rug."),
        (1, "brown dog sleeping "),
        (1, "A dog rests indoors"),
        (2, "An airplane on the runway."),
        (3, "A yellow bus parked."),
        (3, ""),
        (3, "School bus by the road."),
    ]
    assert dataset.skipped == []


def test_pascal50s_reads_cider_code_refs_layout(tmp_path):
    entries = [("2008_000032.jpg", ["One.", "Two."])]
    source = write_pascal50s(tmp_path, entries=entries, variable="refs", fields=("image", "sent"))
    dataset = load_pascal50s([source])
    assert dataset.images == [
        SourceImage(1, os.path.join(str(tmp_path), "JPEGImages", "2008_000032.jpg"), "test")
    ]
    assert pairs(dataset) == [(1, "One."), (1, "Two.")]


def test_pascal50s_bad_sentence_and_repeated_image_are_skipped(tmp_path):
    url = PASCAL_URL.format(category="cat", name="2008_000001.jpg")
    entries = [
        (url, ["Fine.", np.float64(3.0)]),
        (url, ["Repeat."]),
        (PASCAL_URL.format(category="cow", name="2008_000002.jpg"), ["Cow."]),
    ]
    source = write_pascal50s(tmp_path, entries=entries)
    dataset = load_pascal50s([source])
    assert [i.image_id for i in dataset.images] == [1, 3]  # ids follow file order
    assert pairs(dataset) == [(1, "Fine."), (3, "Cow.")]
    assert [s.kind for s in dataset.skipped] == ["bad_annotation", "bad_annotation"]
    assert dataset.skipped[0].item == f"train_sent_final(1).sentences{{2}} in {source.file}"
    assert "train_sent_final(2)" in dataset.skipped[1].item


def test_pascal50s_unreadable_files_are_format_errors(tmp_path):
    source = write_pascal50s(tmp_path, variable="something_else")
    with pytest.raises(DatasetFormatError, match="train_sent_final") as err:
        load_pascal50s([source])
    assert source.file in str(err.value)

    source = write_pascal50s(tmp_path, fields=("name", "captions"))
    with pytest.raises(DatasetFormatError, match="lacks field 'sentences'"):
        load_pascal50s([source])

    not_mat = tmp_path / "pascal50S.mat"
    not_mat.write_text("definitely not MATLAB")
    with pytest.raises(DatasetFormatError) as err:
        load_pascal50s([AnnotationSource(file=str(not_mat), images_dir=str(tmp_path))])
    assert str(not_mat) in str(err.value)


# --- registry ---------------------------------------------------------------


def test_registry_maps_names_to_loaders():
    assert LOADERS == {
        "coco": load_coco,
        "flickr8k": load_karpathy,
        "flickr30k": load_karpathy,
        "karpathy": load_karpathy,
        "pascal50s": load_pascal50s,
    }


def test_load_dataset_dispatches_and_names_the_result(tmp_path):
    source = write_karpathy(tmp_path, dataset="flickr30k", image_files=False)
    dataset = load_dataset("flickr30k", [source])
    assert dataset.name == "flickr30k"
    assert dataset.images == load_karpathy([source]).images


def test_load_dataset_unknown_name_lists_choices():
    with pytest.raises(ValueError, match="'mscoco'") as err:
        load_dataset("mscoco", [])
    for name in LOADERS:
        assert name in str(err.value)
