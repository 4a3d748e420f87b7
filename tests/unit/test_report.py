"""The evaluation report renders every section, with real images, from tiny stage outputs."""

from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from components.captioning import evaluation as captioning_evaluation
from components.data.folders import PreparedDir
from components.generative import evaluation as generative_evaluation
from components.report import heat_overlay
from pipelines import evaluate
from pipelines.config import load_params

REPO = Path(__file__).resolve().parents[2]
SECTIONS = ("metrics", "captions", "samples", "reconstructions", "interpolations")


class _Page(HTMLParser):
    """Collects section ids, images (src, alt), table captions and the text of each section."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.images: list[tuple[str, str, str]] = []  # (section, src, alt)
        self.text: dict[str, str] = {}
        self.stack: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.sections.append(attrs["id"])
        if tag == "img":
            self.images.append((self.sections[-1] if self.sections else "", attrs["src"], attrs.get("alt", "")))
        if tag not in ("img", "meta", "br"):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()

    def handle_data(self, data):
        if self.sections:
            self.text[self.sections[-1]] = self.text.get(self.sections[-1], "") + data


def _png(path: Path, side: int, value: int) -> None:
    Image.fromarray(np.full((side, side, 3), value, dtype=np.uint8)).save(path)


@pytest.fixture
def stage_outputs(tmp_path):
    """Two test images with references, predictions with 2x2 attention, and the training PNGs."""
    prepared, preds = tmp_path / "prepared", tmp_path / "predictions"
    for d in (prepared / "img", preds, tmp_path / "vae", tmp_path / "gan"):
        d.mkdir(parents=True)
    paths = []
    for i in (1, 2):
        paths.append(str(prepared / "img" / f"{i}.png"))
        _png(Path(paths[-1]), 16, 60 * i)
    pq.write_table(pa.table({"image_id": [1, 2], "path": paths, "split": ["test", "test"]}),
                   PreparedDir(prepared).images)
    pq.write_table(pa.table({"image_id": [1, 1, 2], "split": ["test"] * 3,
                             "caption": ["a red circle", "A red ball.", "a <b>blue</b> square"]}),
                   PreparedDir(prepared).captions)
    (preds / "test.json").write_text(json.dumps([{"image_id": 1, "caption": "a red circle"},
                                                 {"image_id": 2, "caption": "a blue square"}]))
    attention = {"1": np.full((4, 4), 0.25, np.float16), "2": np.eye(4, dtype=np.float16)[:3]}
    np.savez_compressed(preds / "test_attention.npz", **attention)
    for family, names in (("vae", ("samples", "reconstructions", "interpolations")),
                          ("gan", ("samples", "interpolations"))):
        for name in names:
            _png(tmp_path / family / f"{name}.png", 20, 128)
    return tmp_path


def test_report_renders_with_every_section(stage_outputs):
    cfg = load_params(REPO / "params.yaml").evaluate
    prepared, preds = stage_outputs / "prepared", stage_outputs / "predictions"
    predictions = captioning_evaluation.read_predictions(preds / "test.json")
    references = captioning_evaluation.read_references(prepared, "test")
    assert references == {1: ["a red circle", "A red ball."], 2: ["a <b>blue</b> square"]}
    metrics = {"captioner": {"cider": 1.5, "spice": None, "unavailable": ["spice"],
                             "unavailable_reasons": {"spice": "no jars"}},
               "vae": {"test_elbo": -100.0, "fid": 3.0, "feature_network": "in_domain:x"},
               "gan": {"fid": 2.0, "inception_score": None, "feature_network": "in_domain:x"}}
    # each family's sections, in registry order, as the evaluate stage collects them
    sections = [captioning_evaluation.caption_section(cfg, prepared, preds, predictions, references),
                *generative_evaluation.figure_sections("vae", stage_outputs / "vae"),
                *generative_evaluation.figure_sections("gan", stage_outputs / "gan")]
    page = evaluate.build_report(cfg, metrics=metrics, sections=sections, feature_network="in_domain:x")
    parsed = _Page()
    parsed.feed(page)
    assert page.startswith("<!DOCTYPE html>") and parsed.stack == []  # every tag closed, in order
    assert parsed.sections == list(SECTIONS)
    # the three metric tables, None shown as n/a, and the in-domain label
    assert all(f"metrics/{m}.json" in parsed.text["metrics"] for m in ("captioner", "vae", "gan"))
    assert "n/a" in parsed.text["metrics"] and "not Inception FID" in page
    # captions: generated and references (escaped, not markup), one heat map per generated word
    assert "a <b>blue</b> square" in parsed.text["captions"] and "A red ball." in parsed.text["captions"]
    by_section: dict[str, list[tuple[str, str]]] = {}
    for section, src, alt in parsed.images:
        assert src.startswith("data:image/png;base64,")
        Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).verify()
        by_section.setdefault(section, []).append((src, alt))
    caption_alts = [alt for _, alt in by_section["captions"]]
    # image 1: the picture + 3 words; image 2: the picture + 3 words (3 attention rows)
    assert caption_alts == ["image 1", "a", "red", "circle", "image 2", "a", "blue", "square"]
    assert len(by_section["samples"]) == 2 and len(by_section["reconstructions"]) == 1
    assert len(by_section["interpolations"]) == 2


def test_heat_overlay_brightens_the_attended_cell():
    image = np.full((8, 8, 3), 50, dtype=np.uint8)
    out = np.asarray(heat_overlay(image, np.array([1.0, 0.0, 0.0, 0.0])), dtype=int)  # top-left attended
    assert out[0, 0].sum() > out[7, 7].sum()
    with pytest.raises(ValueError, match="square"):
        heat_overlay(image, np.ones(3))
