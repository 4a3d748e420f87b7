"""The captioner's part of the ``evaluate`` stage: caption metrics and the report's captions section.

* ``metrics/captioner.json``: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D and SPICE
  (:func:`components.metrics.captions.coco_scores`; what could not be computed
  is listed in ``unavailable``) of the predictions on the split, and on
  synthetic data the semantic scores against the scene table (else null).
* The ``captions`` section: the first ``report_images`` images with the
  generated caption, the references and per-word attention maps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from components.data.folders import PreparedDir
from components.data.synthetic import read_scenes
from components.metrics.captions import coco_scores
from components.metrics.semantic import scene_accuracy
from components.report import Section, caption_row
from components.train.family import Evaluation

SEMANTIC_KEYS = ("exact_scene_accuracy", "names_all_objects", "object_precision", "object_recall", "object_f1",
                 "relation_precision", "relation_recall", "relation_f1")


def read_predictions(path: Path) -> dict[int, str]:
    """A COCO results file (``[{"image_id", "caption"}]``) as image id → caption."""
    if not path.is_file():
        raise FileNotFoundError(f"no predictions file {path} (run the train_captioner or finetune_captioner stage "
                                "first)")
    return {int(r["image_id"]): r["caption"] for r in json.loads(path.read_text())}


def read_references(prepared: Path, split: str) -> dict[int, list[str]]:
    """The split's reference captions from the prepared captions table, image id → captions."""
    table = pq.read_table(PreparedDir(prepared).captions, columns=["image_id", "split", "caption"]).to_pydict()
    refs: dict[int, list[str]] = {}
    for image_id, s, caption in zip(table["image_id"], table["split"], table["caption"]):
        if s == split:
            refs.setdefault(int(image_id), []).append(caption)
    return refs


def caption_metrics(cfg: Any, predictions: dict[int, str], references: dict[int, list[str]],
                    prepared: Path) -> dict:
    """``metrics/captioner.json``: COCO metrics, and the semantic scores on synthetic data (else null)."""
    metrics = {"split": cfg.split, **coco_scores(predictions, references, spice=cfg.spice)}
    scenes_file = PreparedDir(prepared).scenes
    semantic = scene_accuracy(predictions, read_scenes(scenes_file)) if scenes_file.exists() else {}
    return {**metrics, **{k: semantic.get(k) for k in SEMANTIC_KEYS}}


def caption_section(cfg: Any, prepared: Path, predictions_dir: Path, predictions: dict[int, str],
                    references: dict[int, list[str]], *, section_id: str = "captions",
                    title: str = "Captions") -> Section:
    """The first ``cfg.report_images`` images of the split with caption, references, attention, semantic check."""
    shown = sorted(predictions)[: cfg.report_images]
    table = pq.read_table(PreparedDir(prepared).images, columns=["image_id", "path"]).to_pydict()
    paths = dict(zip(table["image_id"], table["path"]))
    attention_file = predictions_dir / f"{cfg.split}_attention.npz"
    attention = np.load(attention_file) if attention_file.exists() else None
    scenes_file = PreparedDir(prepared).scenes
    scenes = read_scenes(scenes_file) if scenes_file.exists() else None
    rows = []
    for image_id in shown:
        with Image.open(paths[image_id]) as im:
            image = np.asarray(im.convert("RGB"))  # (H, W, 3)
        notes = ""
        if scenes is not None:
            s = scene_accuracy({image_id: predictions[image_id]}, scenes)
            notes = (f'<div class="note">objects P/R {s["object_precision"]:.2f}/{s["object_recall"]:.2f}, '
                     f'exact scene: {"yes" if s["exact_scene_accuracy"] else "no"}</div>')
        weights = attention[str(image_id)].astype(np.float32) if attention is not None else None
        rows.append(caption_row(image, predictions[image_id], references[image_id], image_id=image_id,
                                attention=weights, notes=notes))
    what = ("per-word attention maps (hot colours: attended; each map min-max scaled)" if attention is not None
            else "no attention (Show and Tell)")
    intro = f'<p class="note">{len(shown)} of {len(predictions)} {cfg.split} images; generated caption in bold, ' \
            f"references below; {what}.</p>"
    return Section(section_id, title, intro + "".join(rows))


def evaluate(evaluation: Evaluation) -> tuple[dict, list[Section]]:
    """The caption metrics of the predictions on ``cfg.split``, and the captions section."""
    cfg, prepared, predictions_dir = evaluation.cfg, evaluation.prepared, evaluation.outputs["predictions"]
    predictions = read_predictions(predictions_dir / f"{cfg.split}.json")
    references = read_references(prepared, cfg.split)
    metrics = caption_metrics(cfg, predictions, references, prepared)
    return metrics, [caption_section(cfg, prepared, predictions_dir, predictions, references)]


def evaluate_finetuned(evaluation: Evaluation) -> tuple[dict, list[Section]]:
    """:func:`evaluate` for the SCST-fine-tuned captioner: the same metrics, its own report section."""
    cfg, prepared, predictions_dir = evaluation.cfg, evaluation.prepared, evaluation.outputs["predictions"]
    predictions = read_predictions(predictions_dir / f"{cfg.split}.json")
    references = read_references(prepared, cfg.split)
    metrics = caption_metrics(cfg, predictions, references, prepared)
    return metrics, [caption_section(cfg, prepared, predictions_dir, predictions, references,
                                     section_id="captions_scst", title="Captions after SCST fine-tuning")]


__all__ = ["caption_metrics", "caption_section", "evaluate", "evaluate_finetuned", "read_predictions",
           "read_references"]
