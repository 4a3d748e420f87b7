"""The SCST-fine-tuned captioner as a model family: the ``finetune_captioner`` stage.

    python -m pipelines.train --family scst ...   (``dvc repro finetune_captioner``)

Inputs: the prepared folder, the cached features and the cross-entropy model
folder of ``train_captioner``. The loop (:func:`~components.captioning.finetune.train_loop_per_worker`)
fine-tunes that model by self-critical sequence training and keeps the one of
the best validation reward; :func:`export` writes its folder (the captioner's
format: ``capsynth caption``, the registry and serving read it as they read the
cross-entropy model) and its val/test predictions, like the captioner's export.
``evaluate`` scores the predictions as the captioner's (``metrics/scst.json``);
``register`` registers the folder under the captioner's registered name, so
the champion rule (test CIDEr-D) decides between the cross-entropy and the
fine-tuned model.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from components.captioning import family as captioner
from components.captioning.finetune import train_loop_per_worker
from components.data.folders import PreparedDir
from components.features.store import FeaturesDir, read_meta
from components.io import short_sha256
from components.train.family import Family, Trained, steady_rate

CURVE_KEYS = ("epoch", "train_reward", "train_baseline", "train_advantage_std", "train_entropy", "train_loss",
              "train_sample_length", "val_reward", "val_cider", "val_bleu_4", "val_names_all_objects",
              "val_relation_f1", "train_samples_per_s")
MODEL_FILES = ("config.json", "model.pt", "vocab.json")


def loop_config(cfg: Any, inputs: Mapping[str, Path]) -> dict[str, Any]:
    """The workers' config: absolute input folders and the train params."""
    return {"features_dir": str(inputs["features"].resolve()), "prepared_dir": str(inputs["prepared"].resolve()),
            "captioner_dir": str(inputs["captioner"].resolve()), "train": cfg.train}


def data_version(inputs: Mapping[str, Path]) -> dict[str, str]:
    """Hashes of the features, the captions table and the cross-entropy model's files."""
    features, prepared, model = inputs["features"], inputs["prepared"], inputs["captioner"]
    missing = [name for name in MODEL_FILES if not (model / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{model}: no {', '.join(missing)} (run train_captioner first)")
    return {"features": read_meta(features).get("weights_sha256", ""),
            "features_meta": short_sha256(FeaturesDir(features).meta),
            "captions": short_sha256(PreparedDir(prepared).captions),
            "captioner": short_sha256(model / "model.pt")}


def tags(inputs: Mapping[str, Path], version: Mapping[str, str]) -> dict[str, str]:
    """MLflow tags: the captioner's, and the hash of the cross-entropy model it starts from."""
    return {**captioner.tags(inputs, version), "finetuned_from": version["captioner"]}


def export(cfg: Any, state: dict[str, Any], trained: Trained) -> dict[str, Any]:
    """Write the best model's folder and the val/test predictions; return the fine-tuning summary."""
    train = cfg.train
    start = state["start"]
    metrics: dict[str, Any] = {
        "best_epoch": state["best_epoch"], "epochs_run": len(state["history"]),
        "train_seconds": round(trained.seconds, 1), "beam_size": cfg.decode.beam_size,
        "reward": train.reward, "baseline": train.baseline, "samples_per_image": train.samples_per_image,
        "best_val_reward": state["best_reward"], "start_val_reward": start["val_reward"],
        "start_val_cider": start["val_cider"],
        "train_samples_per_s": round(steady_rate(state["history"], "train_samples_per_s"), 1)
        if state["history"] else None,
    }
    extra = {"best_epoch": state["best_epoch"], "best_val_reward": state["best_reward"], "ray_run": trained.run_name,
             "finetuned_from": trained.data_version["captioner"],
             "scst": {"reward": train.reward, "baseline": train.baseline, "samples_per_image": train.samples_per_image}}
    return captioner.write_outputs(cfg.decode, state, trained, extra, metrics)


SCST = Family(
    name="scst",
    loop=train_loop_per_worker,
    inputs={"prepared": "data/prepared", "features": "data/features", "captioner": "models/captioner"},
    outputs={"predictions": "data/predictions/scst"},
    loop_config=loop_config,
    data_version=data_version,
    export=export,
    curve_keys=CURVE_KEYS,
    progress_keys=("train_reward", "train_entropy", "val_reward", "val_cider", "train_samples_per_s"),
    tags=tags,
    evaluate="components.captioning.evaluation:evaluate_finetuned",
    eval_outputs=("predictions",),
    registration="components.registry:CAPTIONER",
)
