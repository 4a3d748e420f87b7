"""The captioner as a model family: what ``python -m pipelines.train --family captioner`` runs.

Inputs: the prepared folder (captions, vocab, the synthetic scenes) and the
cached CNN features. The loop (:func:`~components.captioning.fit.train_loop_per_worker`)
keeps the best model by validation CIDEr-D; :func:`export` rebuilds it from the
last checkpoint, writes the model folder (weights, config with the features'
backbone record, vocab), decodes val and test with beam search into the
predictions folder (COCO results format, attention maps as ``*_attention.npz``)
and returns the training summary: quick test BLEU/CIDEr-D on normalized text
and, on synthetic data, the scene accuracy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from components.captioning.data import load_caption_data
from components.captioning.fit import decode_split, train_loop_per_worker
from components.captioning.io import save_model_dir
from components.captioning.models import CaptionerConfig, build_model
from components.data.folders import PreparedDir
from components.data.ptb import detokenize
from components.data.synthetic import read_scenes
from components.features.store import FeaturesDir, read_meta
from components.io import atomic_dir, short_sha256
from components.metrics.captions import quick_scores
from components.metrics.semantic import scene_accuracy
from components.train.family import Family, Trained

CURVE_KEYS = ("epoch", "train_loss", "val_loss", "val_bleu_4", "val_cider", "lr", "train_captions_per_s")
# the features' record kept in the model folder: the captioner reads images back through the same CNN
FEATURE_RECORD = ("backbone", "weights", "weights_source", "weights_sha256", "seed", "input_size", "stage",
                  "grid_size", "dtype")


def loop_config(cfg: Any, inputs: Mapping[str, Path]) -> dict[str, Any]:
    """The workers' config: absolute input folders, the model and train params."""
    return {"features_dir": str(inputs["features"].resolve()), "prepared_dir": str(inputs["prepared"].resolve()),
            "model": cfg.model, "train": cfg.train}


def data_version(inputs: Mapping[str, Path]) -> dict[str, str]:
    """Hashes of the features (their weights and record) and of the captions table."""
    features, prepared = inputs["features"], inputs["prepared"]
    return {"features": read_meta(features).get("weights_sha256", ""),
            "features_meta": short_sha256(FeaturesDir(features).meta),
            "captions": short_sha256(PreparedDir(prepared).captions)}


def tags(inputs: Mapping[str, Path], version: Mapping[str, str]) -> dict[str, str]:
    """MLflow tags: the backbone, and the hashes (from the data version) of the features and the captions."""
    return {"backbone": read_meta(inputs["features"]).get("backbone", ""), "features_hash": version["features_meta"],
            "data_hash": version["captions"]}


def export(cfg: Any, state: dict[str, Any], trained: Trained) -> dict[str, Any]:
    """Write the best model's folder and the val/test predictions; return the training summary."""
    metrics: dict[str, Any] = {"best_epoch": state["best_epoch"], "epochs_run": len(state["history"]),
                               "train_seconds": round(trained.seconds, 1), "beam_size": cfg.decode.beam_size}
    extra = {"best_epoch": state["best_epoch"], "best_val_cider": state["best_cider"], "ray_run": trained.run_name}
    return write_outputs(cfg.decode, state, trained, extra, metrics)


def write_outputs(decode: Any, state: dict[str, Any], trained: Trained, extra: dict[str, Any],
                  metrics: dict[str, Any]) -> dict[str, Any]:
    """The model folder of ``state["best_model"]`` (with the features' record and ``extra``) and its val/test
    predictions (beam search as ``decode`` says); returns ``metrics`` with the test BLEU/CIDEr-D and, on
    synthetic data, the scene scores. Shared by the cross-entropy and the SCST captioner."""
    prepared, features = trained.inputs["prepared"], trained.inputs["features"]
    meta = read_meta(features)
    model_cfg = CaptionerConfig.from_dict(state["model_config"])
    model = build_model(model_cfg)
    model.load_state_dict(state["best_model"])
    data = load_caption_data(features, prepared)
    extra = {"features": {k: meta.get(k) for k in FEATURE_RECORD}, **extra}
    with atomic_dir(trained.outputs["model"]) as tmp:
        save_model_dir(tmp, model, model_cfg, data.vocab, extra)

    metrics = dict(metrics)
    scenes_file = PreparedDir(prepared).scenes
    scenes = read_scenes(scenes_file) if scenes_file.exists() else None
    with atomic_dir(trained.outputs["predictions"]) as tmp:
        for split in ("val", "test"):
            if split not in data.splits:
                continue
            preds, attention = decode_split(model, data, data.splits[split], beam_size=decode.beam_size,
                                            length_penalty=decode.length_penalty)
            # the tokens joined back into text (man 's -> man's): what people and the evaluation read
            results = [{"image_id": i, "caption": detokenize(c)} for i, c in sorted(preds.items())]
            (tmp / f"{split}.json").write_text(json.dumps(results, indent=1) + "\n")
            if attention:
                np.savez_compressed(tmp / f"{split}_attention.npz",
                                    **{str(i): a.astype(np.float16) for i, a in attention.items()})
            if split == "test":
                metrics.update(quick_scores(preds, data.splits[split].references))
                if scenes is not None:
                    metrics.update(scene_accuracy(preds, scenes))
    return metrics


CAPTIONER = Family(
    name="captioner",
    loop=train_loop_per_worker,
    inputs={"prepared": "data/prepared", "features": "data/features"},
    outputs={"predictions": "data/predictions/captioner"},
    loop_config=loop_config,
    data_version=data_version,
    export=export,
    curve_keys=CURVE_KEYS,
    progress_keys=("train_loss", "val_loss", "val_cider", "train_captions_per_s"),
    tags=tags,
    evaluate="components.captioning.evaluation:evaluate",
    eval_outputs=("predictions",),
    registration="components.registry:CAPTIONER",
)
