"""DVC stage ``train_vae``: prepared images → a VAE, its samples and its test ELBO.

    python -m pipelines.train_vae --params params.yaml --prepared data/prepared \
        --out models/vae --reports reports/vae --metrics metrics/train_vae.json \
        --plots plots/vae.csv --storage ray_results

Training runs on Ray Train (``TorchTrainer``, DDP over ``scaling.num_workers``);
this driver then rebuilds the model from the last checkpoint and writes the
model folder (``config.json`` + ``vae.pt``, rebuildable alone), the PNGs
(prior samples, test reconstructions, latent interpolations, the per-epoch
fixed-noise progress), the test metrics (ELBO terms and the IWAE bound in nats
per image and bits/dim, at init and after training; sample diagnostics) and
the per-epoch curves. Every output is written atomically; a rerun of the same
config resumes from the run's last checkpoint under ``--storage``. A NaN or
infinite loss stops the stage with the step, and where the last good
checkpoint is.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from components.config import to_dict
from components.generative.common import from_uint8_images
from components.generative.diagnostics import colour_distance, sample_diversity
from components.generative.fit import evaluate_vae, grid_rows, train_loop_per_worker_vae
from components.generative.io import save_model_dir
from components.generative.models import build_vae
from components.generative.sampling import image_grid, interpolate, reconstructions, sample
from components.io import atomic_dir
from components.ray_adapter import init_ray
from pipelines import generative_stage
from pipelines.common import stage_main
from pipelines.config import TrainVAEConfig, load_params

log = logging.getLogger("train_vae")

CURVE_KEYS = ("epoch", "train_elbo", "val_elbo", "train_recon_nll", "val_recon_nll", "train_kl", "val_kl",
              "train_bits_per_dim", "val_bits_per_dim", "sample_diversity", "colour_hist_distance",
              "train_images_per_s")


def run(cfg: TrainVAEConfig, *, prepared: Path, out: Path, reports: Path, metrics_path: Path, plots_path: Path,
        storage: Path, params_file: str = "params.yaml") -> dict:
    """Train, then write the model folder, PNGs, metrics and curves; return the metrics."""
    paths = generative_stage.image_splits(prepared)
    version = generative_stage.data_hash(prepared)
    init_ray()
    with generative_stage.stage_run("train_vae", "vae", train_loop_per_worker_vae, cfg, data_version=version,
                          params_file=params_file) as (run_name, logger):
        state, run_name, train_seconds = generative_stage.train_on_ray(
            "vae", train_loop_per_worker_vae, cfg, paths=paths, data_version=version, storage=storage,
            logger=logger)
        last = state["history"][-1]
        log.info("trained %d epochs in %.0f s; val ELBO %.1f nats (%.3f bits/dim)", len(state["history"]),
                 train_seconds, last["val_elbo"], last["val_bits_per_dim"])

        torch.manual_seed(cfg.train.seed)  # the same initial weights as the training run
        model = build_vae(cfg.model)
        split, held_out = generative_stage.eval_images(paths, cfg.model.image_size)
        at_init = evaluate_vae(model, held_out, seed=cfg.train.seed)
        model.load_state_dict(state["model"])
        model.eval()
        final = evaluate_vae(model, held_out, iw_samples=cfg.train.iw_samples, seed=cfg.train.seed)

        real = held_out.permute(0, 2, 3, 1).numpy()  # (N, S, S, 3) uint8
        samples = sample(model, 64, cfg.train.sample_seed)  # (64, S, S, 3)
        diagnostics = sample(model, cfg.train.num_samples, cfg.train.sample_seed)
        recon = reconstructions(model, real)  # (N, S, S, 3)
        metrics = {
            "eval_split": split,
            "epochs_run": len(state["history"]),
            "train_seconds": round(train_seconds, 1),
            "train_images_per_s": round(generative_stage.steady_images_per_s(state["history"]), 1),
            **{f"test_{k}": v for k, v in final.items() if k != "loss"},
            "test_elbo_at_init": at_init["elbo"],
            "test_bits_per_dim_at_init": at_init["bits_per_dim"],
            "sample_diversity": sample_diversity(diagnostics, real[: cfg.train.num_samples]),
            "colour_hist_distance": colour_distance(diagnostics, real[: cfg.train.num_samples]),
            "recon_colour_hist_distance": colour_distance(recon, real),
            "recon_mse": float(np.mean(((recon.astype(np.float32) - real) / 255.0) ** 2)),
        }
        with atomic_dir(out) as tmp:
            save_model_dir(tmp, "vae", {"vae": model}, cfg.model,
                           extra={"ray_run": run_name, "data_hash": version, "epochs": len(state["history"]),
                                  "test": {k: v for k, v in metrics.items() if k.startswith("test_")}})
        with atomic_dir(reports) as tmp:
            generative_stage.save_png(tmp / "samples.png", image_grid(samples, nrow=8))
            per_row = min(8, len(real))  # up to 4 rows of originals, each above its reconstructions
            shown = real[: per_row * min(4, len(real) // per_row)]
            generative_stage.save_png(tmp / "reconstructions.png", image_grid(
                generative_stage.interleave(shown, recon[: len(shown)], per_row=per_row), nrow=per_row))
            with torch.no_grad():  # 8 rows: between the posterior means of two test images
                mu, _ = model.encoder(from_uint8_images(shown[:16], value_range=(0.0, 1.0)))  # (16, L)
            rows = [interpolate(model, mu[i], mu[i + 1], 10, method="linear") for i in range(0, len(mu) - 1, 2)]
            generative_stage.save_png(tmp / "interpolations.png", image_grid(np.concatenate(rows), nrow=10))
            generative_stage.save_png(tmp / "progress.png", image_grid(grid_rows(state["progress"]), nrow=8))
        generative_stage.finish(metrics, state["history"], CURVE_KEYS, out=out, reports=reports,
                                metrics_path=metrics_path, plots_path=plots_path)
    return metrics


@stage_main("train_vae")
def main(argv: list[str] | None = None) -> None:
    args = generative_stage.parse_args("vae", __doc__.splitlines()[0], argv)
    cfg = load_params(args.params).train_vae
    metrics = run(cfg, prepared=args.prepared, out=args.out, reports=args.reports, metrics_path=args.metrics,
                  plots_path=args.plots, storage=args.storage, params_file=args.params)
    log.info("%s: ELBO %.1f nats (%.3f bits/dim; %.1f at init), IWAE NLL %s", metrics["eval_split"],
             metrics["test_elbo"], metrics["test_bits_per_dim"], metrics["test_elbo_at_init"],
             f"{metrics['test_iwae_nll']:.1f}" if "test_iwae_nll" in metrics else "off")


if __name__ == "__main__":
    main()
