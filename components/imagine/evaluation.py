"""The conditional generator judged by the captioner: the ``imagine`` part of the ``evaluate`` stage.

For the first caption of every image of the split (at most
``imagine_captions``), the generator draws ``imagine_samples`` images
(seeded); the trained captioner captions each, the scene parser reads the
caption, and the reading is scored against the scene the conditioning caption
describes (the scene table of the synthetic data): object precision, recall
and F1 (size, colour and shape must all match), relation F1, exact-scene
accuracy, also by number of objects, and object F1 on the colour alone, on
size and colour, and on the shape alone. This is
the generator's *caption consistency*. Beside it:

* the judge's ceiling: the same scores of the captioner on the real images
  of those captions, at their own size and at the generator's size (the
  generator cannot be read better than real images of its size);
* diversity: the mean pairwise distance of the images of one caption
  (``diversity``: near 0 means copies), and of real images for scale;
* conditional FID/KID: one image per caption against the split's real images,
  in the feature space the GAN is measured in (``evaluate.feature_network``).

Without a scene table (real datasets) the consistency is skipped and says so.
"""

from __future__ import annotations

import html
import io
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from components.captioning.inference import Captioner
from components.data.folders import PreparedDir
from components.data.scene_language import parse_caption, score_caption
from components.data.synthetic import read_scenes
from components.generative.data import image_splits, load_images
from components.generative.diagnostics import mean_pairwise_l2
from components.generative.sampling import image_grid
from components.imagine.data import captioned_images
from components.imagine.io import Imaginer
from components.metrics.generative import generative_scores
from components.metrics.semantic import scene_accuracy
from components.report import Section, figure
from components.train.family import Evaluation

REPORT_CAPTIONS = 8  # captions shown in the report, each with its images and their readings


def _png(image: np.ndarray) -> io.BytesIO:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    buffer.seek(0)
    return buffer


def read_back(captioner: Captioner, images: np.ndarray, *, batch_size: int = 64) -> list[str]:
    """The captioner's caption of each uint8 ``(N, S, S, 3)`` image, read as PNG as a user's file would be."""
    out: list[str] = []
    for start in range(0, len(images), batch_size):
        out += captioner([_png(im) for im in images[start : start + batch_size]])
    return out


ATTRIBUTES = {"colour": (1,), "size_colour": (0, 1), "shape": (2,)}  # positions in (size, colour, shape)


def attribute_f1(readings: Sequence[str], scenes: Sequence[Any], positions: tuple[int, ...]) -> float:
    """Object F1 matching only some attributes (``(1,)``: the colour): where a generator follows a caption
    in part (the right colours, blurred shapes), this says which part."""
    tp = fp = fn = 0
    for reading, scene in zip(readings, scenes):
        said = Counter(tuple(obj.key[i] for i in positions) for obj in parse_caption(reading).objects)
        true = Counter(tuple(obj.key[i] for i in positions) for obj in scene)
        hit = sum((said & true).values())
        tp, fp, fn = tp + hit, fp + sum(said.values()) - hit, fn + sum(true.values()) - hit
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def consistency(readings: Sequence[str], scenes: Sequence[Any], *, prefix: str) -> dict[str, float]:
    """Scene scores of ``readings`` against ``scenes`` (one each), overall, by attribute and by number of objects."""
    metrics = {f"{prefix}{k}": v for k, v in scene_accuracy(dict(enumerate(readings)), dict(enumerate(scenes))).items()
               if k != "names_all_objects"}
    for name, positions in ATTRIBUTES.items():
        metrics[f"{prefix}{name}_f1"] = attribute_f1(readings, scenes, positions)
    for count in sorted({len(s) for s in scenes}):
        rows = [i for i, s in enumerate(scenes) if len(s) == count]
        exact = [score_caption(parse_caption(readings[i]), scenes[i])["exact"] for i in rows]
        metrics[f"{prefix}exact_scene_accuracy_{count}_objects"] = float(np.mean(exact))
    return metrics


def evaluate(evaluation: Evaluation) -> tuple[dict[str, Any], list[Section]]:
    """The caption consistency, its ceiling, diversity and conditional FID/KID, and the round-trip section."""
    cfg = evaluation.cfg
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    imaginer = Imaginer(evaluation.outputs["model"], map_location=device)
    captioner = Captioner(evaluation.outputs["captioner.model"])
    held = captioned_images(evaluation.prepared, cfg.split)
    count = len(held.image_ids) if cfg.imagine_captions == 0 else min(cfg.imagine_captions, len(held.image_ids))
    captions = [c[0] for c in held.captions[:count]]
    k, size = cfg.imagine_samples, imaginer.config.image_size
    images = imaginer(captions, n=k, seed=cfg.seed).numpy()  # (C, K, S, S, 3)
    real = load_images(held.paths[:count], size=size, num_workers=2).permute(0, 2, 3, 1).numpy()  # (C, S, S, 3)
    metrics: dict[str, Any] = {"split": cfg.split, "captions": count, "samples_per_caption": k,
                               "image_size": size}

    flat = images.reshape(-1, size, size, 3)
    readings = read_back(captioner, flat)
    scenes_file = PreparedDir(evaluation.prepared).scenes
    if scenes_file.exists():
        table = read_scenes(scenes_file)
        scenes = [table[i] for i in held.image_ids[:count]]
        metrics |= consistency(readings, [s for s in scenes for _ in range(k)], prefix="")
        with Image.open(held.paths[0]) as first:
            native = first.size[0]
        metrics |= consistency(captioner(held.paths[:count]), scenes, prefix="ceiling_")
        metrics |= consistency(read_back(captioner, real), scenes, prefix=f"ceiling_{size}px_")
        metrics["ceiling_image_size"] = native
    else:
        metrics["consistency"] = f"skipped: {scenes_file} not found (scene tables exist for synthetic data only)"

    metrics["diversity"] = float(np.mean([mean_pairwise_l2(images[i]) for i in range(count)]))
    metrics["diversity_real"] = mean_pairwise_l2(real)
    all_real = load_images(image_splits(evaluation.prepared)[cfg.split], size=size, num_workers=2)
    scores = generative_scores(evaluation.feature_network(), all_real.permute(0, 2, 3, 1).numpy(), images[:, 0],
                               kid_subsets=cfg.kid_subsets, kid_subset_size=cfg.kid_subset_size,
                               pr_k=cfg.pr_neighbours, seed=cfg.seed)
    metrics |= {k2: v for k2, v in scores.items() if k2 != "inception_score"}
    return metrics, [round_trip_section(captions, images, readings, scenes if scenes_file.exists() else None)]


def round_trip_section(captions: Sequence[str], images: np.ndarray, readings: Sequence[str],
                       scenes: Sequence[Any] | None) -> Section:
    """Caption → its generated images → what the captioner reads in each, right (✓) or wrong (✗)."""
    k = images.shape[1]
    rows = []
    for i, caption in enumerate(captions[:REPORT_CAPTIONS]):
        grid = image_grid(images[i], nrow=k)
        marks = []
        for j in range(k):
            reading = readings[i * k + j]
            ok = scenes is not None and score_caption(parse_caption(reading), scenes[i])["exact"]
            marks.append(f"<li>{'✓' if ok else '✗'} {html.escape(reading)}</li>")
        rows.append(f"<div class=\"roundtrip\"><p><b>{html.escape(caption)}</b></p>{figure(grid, 'generated', scale=2)}"
                    f"<ol>{''.join(marks)}</ol></div>")
    return Section("imagine", "Imagine: caption → images → the captioner's reading", "".join(rows))


__all__ = ["attribute_f1", "consistency", "evaluate", "read_back", "round_trip_section"]
