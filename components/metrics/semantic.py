"""Semantic accuracy of captions of synthetic scenes, against the true scene table.

Each generated caption is parsed into objects (size, colour, shape) and
relations (``components.data.scene_language.parse_caption``) and matched with
the objects the generator drew. Micro-averaged over all images:

* ``object_precision`` / ``object_recall`` / ``object_f1``: (size, colour,
  shape) triples matched as multisets;
* ``relation_precision`` / ``relation_recall`` / ``relation_f1``;
* ``exact_scene_accuracy``: share of captions naming exactly the true objects,
  each with its right size, colour and shape, and nothing else;
* ``names_all_objects``: share of captions naming every object with its right
  colour and shape (extra words allowed) — the captioner's quality bar.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from components.data.scene_language import SceneObject, names_all_objects, parse_caption, score_caption


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def scene_accuracy(predictions: Mapping[int, str], scenes: Mapping[int, Sequence[SceneObject]]) -> dict[str, float]:
    """Scores of ``predictions`` (image id → caption) against ``scenes`` (image id → objects)."""
    if not predictions:
        raise ValueError("no predictions to score")
    totals = dict.fromkeys(("objects_tp", "objects_fp", "objects_fn",
                            "relations_tp", "relations_fp", "relations_fn"), 0)
    exact = named = 0
    for image_id, caption in predictions.items():
        truth = scenes[image_id]
        parsed = parse_caption(caption)
        score = score_caption(parsed, truth)
        for key in totals:
            totals[key] += score[key]
        exact += bool(score["exact"])
        named += names_all_objects(parsed, truth)
    op, orc, of1 = _prf(totals["objects_tp"], totals["objects_fp"], totals["objects_fn"])
    rp, rr, rf1 = _prf(totals["relations_tp"], totals["relations_fp"], totals["relations_fn"])
    n = len(predictions)
    return {
        "object_precision": op, "object_recall": orc, "object_f1": of1,
        "relation_precision": rp, "relation_recall": rr, "relation_f1": rf1,
        "exact_scene_accuracy": exact / n,
        "names_all_objects": named / n,
    }
