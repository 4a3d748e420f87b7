"""DVC stage ``train_captioner``: cached features + captions → a caption model.

    python -m pipelines.train_captioner --params params.yaml \
        --prepared data/prepared --features data/features --out models/captioner \
        --predictions data/predictions/captioner --metrics metrics/train_captioner.json \
        --plots plots/captioner.csv --storage ray_results

Training runs on Ray Train (``TorchTrainer``, DDP over ``scaling.num_workers``);
this driver then rebuilds the best model (by validation CIDEr-D) from the last
checkpoint, writes the model folder, decodes val and test (beam search), and
writes the predictions (COCO results format), the metrics and the curves. Every
output is written atomically; a rerun of the same code, params and data resumes
from the run's last checkpoint under ``--storage`` (and continues its MLflow
run when the driver was killed); anything else trains afresh.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from components import tracking
from components.captioning.data import load_caption_data
from components.captioning.fit import decode_split, train_loop_per_worker
from components.captioning.io import save_model_dir
from components.captioning.models import CaptionModelConfig, build_model
from components.config import flatten, to_dict
from components.data.folders import PreparedDir
from components.data.synthetic import read_scenes
from components.features.store import FeaturesDir, read_meta
from components.io import atomic_dir, atomic_file, short_sha256, write_json
from components.metrics.captions import quick_scores
from components.metrics.semantic import scene_accuracy
from components.ray_adapter import init_ray
from components.train.ray_trainer import ScalingSpec, fit, make_trainer, stable_run_name
from pipelines.common import stage_main
from pipelines.config import TrainCaptionerConfig, load_params

log = logging.getLogger("train_captioner")

CURVE_KEYS = ("epoch", "train_loss", "val_loss", "val_bleu_4", "val_cider", "lr", "train_captions_per_s")


def write_curves(path: Path, history: list[dict]) -> None:
    """Per-epoch curves as CSV, for ``dvc plots``."""
    with atomic_file(path) as f:
        f.write(",".join(CURVE_KEYS) + "\n")
        for row in history:
            f.write(",".join(f"{row[k]:.6g}" if isinstance(row[k], float) else str(row[k]) for k in CURVE_KEYS) + "\n")


def data_version(prepared: Path, features: Path) -> dict[str, str]:
    """Hashes of the inputs a run depends on: part of its run name and MLflow tags."""
    meta = read_meta(features)
    return {"features": meta.get("weights_sha256", ""), "features_meta": short_sha256(FeaturesDir(features).meta),
            "captions": short_sha256(PreparedDir(prepared).captions)}


def build_trainer(cfg: TrainCaptionerConfig, *, prepared: Path, features: Path, storage: Path, run_name: str,
                  logger: tracking.RunLogger | None, callbacks: Sequence[Any] = (), **hooks: Any):
    """The captioner's ``TorchTrainer``: the stage and each sweep trial build it here.

    ``hooks`` go into the loop config as they are (tests: ``on_step``).
    """
    return make_trainer(
        train_loop_per_worker,
        {"features_dir": str(features.resolve()), "prepared_dir": str(prepared.resolve()),
         "arch": cfg.model, "train": cfg.train, **hooks},
        scaling=ScalingSpec.from_params(cfg.scaling, cfg.train.threads_per_worker),
        run_name=run_name,
        storage_path=str(storage),
        callbacks=callbacks,
        logger=logger,
    )


def run_name_of(cfg: TrainCaptionerConfig, data_hash: dict[str, str]) -> str:
    """The Ray run's identity: the training loop's code, the model, train and scaling params, the data."""
    return stable_run_name("captioner", train_loop_per_worker, to_dict(cfg.model), to_dict(cfg.train),
                           to_dict(cfg.scaling), data_hash)


def run(cfg: TrainCaptionerConfig, *, prepared: Path, features: Path, out: Path, predictions_dir: Path,
        metrics_path: Path, plots_path: Path, storage: Path, params_file: str = "params.yaml") -> dict:
    """Train, then write the model folder, predictions, metrics and curves."""
    meta = read_meta(features)
    data_hash = data_version(prepared, features)
    run_name = run_name_of(cfg, data_hash)
    params = flatten(to_dict(cfg))
    init_ray()
    with tracking.training_run(
        "train_captioner",
        ray_run=run_name,
        params=params,
        params_file=params_file,
        tags={"backbone": meta.get("backbone", ""), "features_hash": data_hash["features_meta"],
              "data_hash": data_hash["captions"]},
    ) as logger:
        trainer = build_trainer(cfg, prepared=prepared, features=features, storage=storage, run_name=run_name,
                                logger=logger)
        start = time.perf_counter()
        state = fit(trainer, logger=logger)
        train_seconds = time.perf_counter() - start
        log.info("trained in %.0f s; best val CIDEr-D %.3f at epoch %d",
                 train_seconds, state["best_cider"], state["best_epoch"])

        model_cfg = CaptionModelConfig.from_dict(state["model_config"])
        model = build_model(model_cfg)
        model.load_state_dict(state["best_model"])
        data = load_caption_data(features, prepared)
        extra = {"features": {k: meta.get(k) for k in ("backbone", "weights", "weights_source", "weights_sha256",
                                                         "seed", "input_size", "stage", "grid_size", "dtype")},
                 "best_epoch": state["best_epoch"], "best_val_cider": state["best_cider"], "ray_run": run_name}
        with atomic_dir(out) as tmp:
            save_model_dir(tmp, model, model_cfg, data.vocab, extra)

        metrics: dict = {"best_epoch": state["best_epoch"], "epochs_run": len(state["history"]),
                         "train_seconds": round(train_seconds, 1), "beam_size": cfg.decode.beam_size}
        scenes_file = PreparedDir(prepared).scenes
        scenes = read_scenes(scenes_file) if scenes_file.exists() else None
        with atomic_dir(predictions_dir) as tmp:
            for split in ("val", "test"):
                if split not in data.splits:
                    continue
                preds, attention = decode_split(model, data, data.splits[split], beam_size=cfg.decode.beam_size,
                                                length_penalty=cfg.decode.length_penalty)
                results = [{"image_id": i, "caption": c} for i, c in sorted(preds.items())]
                (tmp / f"{split}.json").write_text(json.dumps(results, indent=1) + "\n")
                if attention:
                    np.savez_compressed(tmp / f"{split}_attention.npz",
                                        **{str(i): a.astype(np.float16) for i, a in attention.items()})
                if split == "test":
                    metrics.update(quick_scores(preds, data.splits[split].references))
                    if scenes is not None:
                        metrics.update(scene_accuracy(preds, scenes))
        write_json(metrics_path, metrics)
        write_curves(plots_path, state["history"])
        tracking.log_metrics({f"test_{k}": v for k, v in metrics.items() if isinstance(v, float)})
        tracking.log_artifacts({"model": out, "predictions": predictions_dir, "plots": plots_path,
                                "metrics": metrics_path})
    return metrics


@stage_main("train_captioner")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    parser.add_argument("--features", type=Path, default=Path("data/features"))
    parser.add_argument("--out", type=Path, default=Path("models/captioner"))
    parser.add_argument("--predictions", type=Path, default=Path("data/predictions/captioner"))
    parser.add_argument("--metrics", type=Path, default=Path("metrics/train_captioner.json"))
    parser.add_argument("--plots", type=Path, default=Path("plots/captioner.csv"))
    parser.add_argument("--storage", type=Path, default=Path("ray_results"))
    args = parser.parse_args(argv)
    cfg = load_params(args.params).train_captioner
    metrics = run(cfg, prepared=args.prepared, features=args.features, out=args.out,
                  predictions_dir=args.predictions, metrics_path=args.metrics, plots_path=args.plots,
                  storage=args.storage, params_file=args.params)
    log.info("test: %s", {k: round(v, 3) for k, v in metrics.items() if isinstance(v, float)})


if __name__ == "__main__":
    main()
