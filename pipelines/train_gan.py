"""DVC stage ``train_gan``: prepared images → a DCGAN, its samples and sample diagnostics.

    python -m pipelines.train_gan --params params.yaml --prepared data/prepared \
        --out models/gan --reports reports/gan --metrics metrics/train_gan.json \
        --plots plots/gan.csv --storage ray_results

Training runs on Ray Train (``TorchTrainer``, DDP over ``scaling.num_workers``);
this driver then rebuilds the generator, its EMA copy (the sampler, BatchNorm
statistics recalibrated) and the discriminator from the last checkpoint and
writes the model folder (rebuildable alone), the PNGs (EMA samples, latent
interpolations, the per-epoch fixed-noise progress), the metrics (sample
diversity and colour-histogram distance to held-out real images, with the
distance between two real sets as the floor; the simple stand-ins until
FID/KID exist) and the per-epoch curves. Outputs are written atomically; a
rerun of the same config resumes from the run's last checkpoint. A NaN or
infinite loss stops the stage with the step, and where the last good
checkpoint is.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from components.config import to_dict
from components.generative.data import load_images
from components.generative.diagnostics import colour_distance, sample_diversity
from components.generative.fit import grid_rows, train_loop_per_worker_gan
from components.generative.io import save_model_dir
from components.generative.models import build_gan, build_generator
from components.generative.sampling import image_grid, interpolate, sample
from components.io import atomic_dir
from components.ray_adapter import init_ray
from pipelines import generative_stage
from pipelines.common import stage_main
from pipelines.config import TrainGANConfig, load_params

log = logging.getLogger("train_gan")

CURVE_KEYS = ("epoch", "d_loss", "g_loss", "d_real", "d_fake", "gp", "sample_diversity", "colour_hist_distance",
              "train_images_per_s")


def run(cfg: TrainGANConfig, *, prepared: Path, out: Path, reports: Path, metrics_path: Path, plots_path: Path,
        storage: Path, params_file: str = "params.yaml") -> dict:
    """Train, then write the model folder, PNGs, metrics and curves; return the metrics."""
    paths = generative_stage.image_splits(prepared)
    version = generative_stage.data_hash(prepared)
    init_ray()
    with generative_stage.stage_run("train_gan", "gan", train_loop_per_worker_gan, cfg, data_version=version,
                          params_file=params_file) as (run_name, logger):
        state, run_name, train_seconds = generative_stage.train_on_ray(
            "gan", train_loop_per_worker_gan, cfg, paths=paths, data_version=version, storage=storage,
            logger=logger)
        log.info("trained %d epochs in %.0f s", len(state["history"]), train_seconds)

        G, D = build_gan(cfg.model)
        G_ema = build_generator(cfg.model)
        for module, key in ((G, "generator"), (D, "discriminator"), (G_ema, "generator_ema")):
            module.load_state_dict(state[key])
            module.eval()

        split, held_out = generative_stage.eval_images(paths, cfg.model.image_size)
        real = held_out.permute(0, 2, 3, 1).numpy()[: cfg.train.num_samples]  # (N, S, S, 3) uint8
        val_real = load_images(paths["val"][: cfg.train.num_samples], size=cfg.model.image_size)
        ema_samples = sample(G_ema, cfg.train.num_samples, cfg.train.sample_seed)  # (N, S, S, 3)
        raw_samples = sample(G, cfg.train.num_samples, cfg.train.sample_seed)
        last = state["history"][-1]
        metrics = {
            "eval_split": split,
            "epochs_run": len(state["history"]),
            "train_seconds": round(train_seconds, 1),
            "train_images_per_s": round(generative_stage.steady_images_per_s(state["history"]), 1),
            "d_loss": last["d_loss"],
            "g_loss": last["g_loss"],
            "sample_diversity": sample_diversity(ema_samples, real),
            "colour_hist_distance": colour_distance(ema_samples, real),
            "sample_diversity_raw_generator": sample_diversity(raw_samples, real),
            "colour_hist_distance_raw_generator": colour_distance(raw_samples, real),
            # the floor: two sets of real images (val against the held-out split)
            "colour_hist_distance_real": colour_distance(val_real.permute(0, 2, 3, 1).numpy(), real),
        }
        with atomic_dir(out) as tmp:
            save_model_dir(tmp, "dcgan", {"generator": G, "generator_ema": G_ema, "discriminator": D}, cfg.model,
                           extra={"ray_run": run_name, "data_hash": version, "epochs": len(state["history"]),
                                  "steps": state["step"], "metrics": generative_stage.without_wall_clock(metrics)})
        with atomic_dir(reports) as tmp:
            generative_stage.save_png(tmp / "samples.png", image_grid(sample(G_ema, 64, cfg.train.sample_seed), nrow=8))
            z = torch.randn(16, cfg.model.latent_dim, generator=torch.Generator().manual_seed(cfg.train.sample_seed))
            rows = [interpolate(G_ema, z[i], z[i + 1], 10, method="slerp") for i in range(0, 16, 2)]
            generative_stage.save_png(tmp / "interpolations.png", image_grid(np.concatenate(rows), nrow=10))
            generative_stage.save_png(tmp / "progress.png", image_grid(grid_rows(state["progress"]), nrow=8))
        generative_stage.finish(metrics, state["history"], CURVE_KEYS, out=out, reports=reports,
                                metrics_path=metrics_path, plots_path=plots_path)
    return metrics


@stage_main("train_gan")
def main(argv: list[str] | None = None) -> None:
    args = generative_stage.parse_args("gan", __doc__.splitlines()[0], argv)
    cfg = load_params(args.params).train_gan
    metrics = run(cfg, prepared=args.prepared, out=args.out, reports=args.reports, metrics_path=args.metrics,
                  plots_path=args.plots, storage=args.storage, params_file=args.params)
    log.info("%s: sample diversity %.3f, colour histogram distance %.3f (real vs real: %.3f)",
             metrics["eval_split"], metrics["sample_diversity"], metrics["colour_hist_distance"],
             metrics["colour_hist_distance_real"])


if __name__ == "__main__":
    main()
