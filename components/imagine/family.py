"""The caption-conditioned generator as a model family: what ``python -m pipelines.train --family imagine`` runs.

It trains on the prepared images and their captions and writes, from the last
checkpoint:

* the model folder (:func:`components.imagine.io.save_model_dir`);
* PNGs in its reports folder: ``samples.png`` (8 images for each of 8 test
  captions, one caption per row, listed in ``samples.json``) and
  ``progress.png`` (the EMA generator on 8 fixed validation captions, a row
  per epoch);
* the last epoch's losses and cheap signals (the caption consistency judged by
  the captioner, and FID/KID: the ``evaluate`` stage).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from components.data.folders import PreparedDir
from components.data.text import Vocab
from components.generative.fit import grid_rows
from components.generative.sampling import image_grid
from components.imagine.data import CaptionedImages, captioned_images, pad
from components.imagine.fit import train_loop_per_worker
from components.imagine.io import save_model_dir
from components.imagine.models import build_parts, imagine
from components.io import atomic_dir, short_sha256
from components.train.family import Family, Trained, steady_rate, without_wall_clock

CURVE_KEYS = ("epoch", "d_loss", "g_loss", "d_real", "d_fake", "d_mismatch", "loss", "recon_nll", "kl", "pixel_std",
              "colour_hist_distance", "sample_diversity", "train_images_per_s")  # GAN's or CVAE's; the other's empty
SAMPLE_CAPTIONS, SAMPLES_PER_CAPTION = 8, 8


def loop_config(cfg: Any, inputs: Mapping[str, Path]) -> dict[str, Any]:
    """The workers' config: train images with all their captions, val images with their first, the params."""
    train, val = captioned_images(inputs["prepared"], "train"), captioned_images(inputs["prepared"], "val")
    n_val = cfg.train.num_samples
    return {"train_data": {"paths": train.paths, "token_ids": train.token_ids},
            "val_data": {"paths": val.paths[:n_val], "token_ids": [ids[0] for ids in val.token_ids[:n_val]]},
            "vocab_size": len(Vocab.load(PreparedDir(inputs["prepared"]).vocab)),
            "model": cfg.model, "train": cfg.train}


def data_version(inputs: Mapping[str, Path]) -> dict[str, str]:
    """Short hashes of the images and captions tables (the images' words are part of the data)."""
    folder = PreparedDir(inputs["prepared"])
    return {"data_hash": short_sha256(folder.images), "captions_hash": short_sha256(folder.captions)}


def export(cfg: Any, state: dict[str, Any], trained: Trained) -> dict[str, Any]:
    """Write the model folder and the sample PNGs; return the last epoch's losses and signals."""
    prepared = trained.inputs["prepared"]
    vocab = Vocab.load(PreparedDir(prepared).vocab)
    parts = build_parts(cfg.model, len(vocab))
    for name, module in parts.items():
        module.load_state_dict(state[name])
        module.eval()
    last = state["history"][-1]
    metrics = {"epochs_run": len(state["history"]), "steps": state["step"],
               "train_seconds": round(trained.seconds, 1),
               "train_images_per_s": round(steady_rate(state["history"], "train_images_per_s"), 1),
               **{k: last[k] for k in ("d_loss", "g_loss", "d_real", "d_fake", "d_mismatch", "loss", "recon_nll", "kl",
                                       "pixel_std", "colour_hist_distance", "sample_diversity") if k in last}}
    with atomic_dir(trained.outputs["model"]) as tmp:
        save_model_dir(tmp, parts, cfg.model, vocab,
                       extra={"ray_run": trained.run_name, **trained.data_version, "steps": state["step"],
                              "metrics": without_wall_clock(metrics)})
    held_out = _held_out(prepared)
    captions = [c[0] for c in held_out.captions[:SAMPLE_CAPTIONS]]
    tokens, lengths = pad([ids[0] for ids in held_out.token_ids[:SAMPLE_CAPTIONS]])
    images = imagine(parts["generator_ema"], tokens, lengths, SAMPLES_PER_CAPTION, cfg.train.sample_seed)
    with atomic_dir(trained.outputs["reports"]) as tmp:
        image_grid(images.reshape(-1, *images.shape[2:]).numpy(), nrow=SAMPLES_PER_CAPTION).save(
            tmp / "samples.png", format="PNG")
        (tmp / "samples.json").write_text(json.dumps(captions, indent=2) + "\n")
        image_grid(grid_rows(state["progress"]), nrow=8).save(tmp / "progress.png", format="PNG")
    return metrics


def _held_out(prepared: Path) -> CaptionedImages:
    """The test split's captioned images, or val's when there is no captioned test image."""
    try:
        return captioned_images(prepared, "test")
    except ValueError:
        return captioned_images(prepared, "val")


IMAGINE = Family(name="imagine", loop=train_loop_per_worker, inputs={"prepared": "data/prepared"},
                 outputs={"reports": "reports/imagine"}, loop_config=loop_config, data_version=data_version,
                 export=export, curve_keys=CURVE_KEYS, evaluate="components.imagine.evaluation:evaluate",
                 eval_outputs=("model", "reports", "captioner.model"),
                 registration="components.imagine.serving:KIND",
                 progress_keys=("d_loss", "g_loss", "d_mismatch", "loss", "kl", "train_images_per_s"))
