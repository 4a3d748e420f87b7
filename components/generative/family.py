"""The VAE and the GAN as model families: what ``python -m pipelines.train --family vae|gan`` runs.

Both train on the prepared images (the ``path`` and ``split`` columns of the
images table) and write, from the last checkpoint:

* the model folder (:func:`components.generative.io.save_model_dir`: rebuilds
  the model alone);
* PNGs in the reports folder: samples, interpolations, the per-epoch
  fixed-noise progress (and the VAE's reconstructions);
* a summary of cheap signals on the held-out split (test, else val): the VAE's
  ELBO, bits/dim and IWAE bound (and the same at initialisation), sample
  diversity and colour-histogram distances (FID/KID: the ``evaluate`` stage).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from components.data.folders import PreparedDir
from components.generative.common import from_uint8_images
from components.generative.data import image_splits, load_images
from components.generative.diagnostics import colour_distance, sample_diversity
from components.generative.fit import evaluate_vae, grid_rows, train_loop_per_worker_gan, train_loop_per_worker_vae
from components.generative.io import save_model_dir
from components.generative.models import build_gan, build_generator, build_vae
from components.generative.sampling import image_grid, interpolate, reconstructions, sample
from components.io import atomic_dir, short_sha256
from components.train.family import Family, Trained, steady_rate, without_wall_clock

VAE_CURVE_KEYS = ("epoch", "train_elbo", "val_elbo", "train_recon_nll", "val_recon_nll", "train_kl", "val_kl",
                  "train_bits_per_dim", "val_bits_per_dim", "sample_diversity", "colour_hist_distance",
                  "train_images_per_s")
GAN_CURVE_KEYS = ("epoch", "d_loss", "g_loss", "d_real", "d_fake", "gp", "sample_diversity", "colour_hist_distance",
                  "train_images_per_s")
INPUTS = {"prepared": "data/prepared"}


def eval_images(splits: dict[str, list[str]], size: int, threads: int = 2) -> tuple[str, torch.Tensor]:
    """The held-out images of the final metrics: test, or val when there is no test split."""
    name = "test" if splits.get("test") else "val"
    return name, load_images(splits[name], size=size, num_workers=threads)


def interleave(*rows: np.ndarray, per_row: int = 8) -> np.ndarray:
    """Images of several equal-length sets, row by row: ``a[0:8], b[0:8], a[8:16], b[8:16], ...``.

    Args:
        rows: uint8 ``(N, H, W, 3)`` each, same ``N`` (a multiple of ``per_row``).
        per_row: Images per grid row.

    Returns:
        np.ndarray: uint8 ``(len(rows) * N, H, W, 3)`` for ``image_grid(nrow=per_row)``.
    """
    n = rows[0].shape[0]
    chunks = [r[i:i + per_row] for i in range(0, n, per_row) for r in rows]
    return np.concatenate(chunks)


def save_png(path: Path, image: Image.Image) -> None:
    """Write a PIL image as PNG (callers write inside an ``atomic_dir``)."""
    image.save(path, format="PNG")


def loop_config(cfg: Any, inputs: Mapping[str, Path]) -> dict[str, Any]:
    """The workers' config: absolute train and val image paths, the model and train params."""
    paths = image_splits(inputs["prepared"])
    return {"paths": {"train": paths["train"], "val": paths["val"]}, "model": cfg.model, "train": cfg.train}


def data_version(inputs: Mapping[str, Path]) -> dict[str, str]:
    """Short hash of the images table: part of the run's identity and the ``data_hash`` tag."""
    return {"data_hash": short_sha256(PreparedDir(inputs["prepared"]).images)}


def _summary(state: dict[str, Any], trained: Trained, split: str) -> dict[str, Any]:
    return {"eval_split": split, "epochs_run": len(state["history"]), "train_seconds": round(trained.seconds, 1),
            "train_images_per_s": round(steady_rate(state["history"], "train_images_per_s"), 1)}


def export_vae(cfg: Any, state: dict[str, Any], trained: Trained) -> dict[str, Any]:
    """Write the VAE's folder and PNGs; return its held-out ELBO, IWAE bound and sample signals."""
    paths = image_splits(trained.inputs["prepared"])
    torch.manual_seed(cfg.train.seed)  # the same initial weights as the training run
    model = build_vae(cfg.model)
    split, held_out = eval_images(paths, cfg.model.image_size)
    at_init = evaluate_vae(model, held_out, seed=cfg.train.seed)
    model.load_state_dict(state["model"])
    model.eval()
    final = evaluate_vae(model, held_out, iw_samples=cfg.train.iw_samples, seed=cfg.train.seed)

    real = held_out.permute(0, 2, 3, 1).numpy()  # (N, S, S, 3) uint8
    samples = sample(model, 64, cfg.train.sample_seed)  # (64, S, S, 3)
    diagnostics = sample(model, cfg.train.num_samples, cfg.train.sample_seed)
    recon = reconstructions(model, real)  # (N, S, S, 3)
    metrics = {
        **_summary(state, trained, split),
        **{f"test_{k}": v for k, v in final.items() if k != "loss"},
        "test_elbo_at_init": at_init["elbo"],
        "test_bits_per_dim_at_init": at_init["bits_per_dim"],
        "sample_diversity": sample_diversity(diagnostics, real[: cfg.train.num_samples]),
        "colour_hist_distance": colour_distance(diagnostics, real[: cfg.train.num_samples]),
        "recon_colour_hist_distance": colour_distance(recon, real),
        "recon_mse": float(np.mean(((recon.astype(np.float32) - real) / 255.0) ** 2)),
    }
    with atomic_dir(trained.outputs["model"]) as tmp:
        save_model_dir(tmp, "vae", {"vae": model}, cfg.model,
                       extra={"ray_run": trained.run_name, "data_hash": trained.data_version["data_hash"],
                              "epochs": len(state["history"]),
                              "test": {k: v for k, v in metrics.items() if k.startswith("test_")}})
    with atomic_dir(trained.outputs["reports"]) as tmp:
        save_png(tmp / "samples.png", image_grid(samples, nrow=8))
        per_row = min(8, len(real))  # up to 4 rows of originals, each above its reconstructions
        shown = real[: per_row * min(4, len(real) // per_row)]
        save_png(tmp / "reconstructions.png",
                 image_grid(interleave(shown, recon[: len(shown)], per_row=per_row), nrow=per_row))
        with torch.no_grad():  # 8 rows: between the posterior means of two test images
            mu, _ = model.encoder(from_uint8_images(shown[:16], value_range=(0.0, 1.0)))  # (16, L)
        rows = [interpolate(model, mu[i], mu[i + 1], 10, method="linear") for i in range(0, len(mu) - 1, 2)]
        save_png(tmp / "interpolations.png", image_grid(np.concatenate(rows), nrow=10))
        save_png(tmp / "progress.png", image_grid(grid_rows(state["progress"]), nrow=8))
    return metrics


def export_gan(cfg: Any, state: dict[str, Any], trained: Trained) -> dict[str, Any]:
    """Write the GAN's folder (G, its EMA copy, D) and PNGs; return sample diversity and colour distances."""
    paths = image_splits(trained.inputs["prepared"])
    G, D = build_gan(cfg.model)
    G_ema = build_generator(cfg.model)
    for module, key in ((G, "generator"), (D, "discriminator"), (G_ema, "generator_ema")):
        module.load_state_dict(state[key])
        module.eval()

    split, held_out = eval_images(paths, cfg.model.image_size)
    real = held_out.permute(0, 2, 3, 1).numpy()[: cfg.train.num_samples]  # (N, S, S, 3) uint8
    val_real = load_images(paths["val"][: cfg.train.num_samples], size=cfg.model.image_size)
    ema_samples = sample(G_ema, cfg.train.num_samples, cfg.train.sample_seed)  # (N, S, S, 3)
    raw_samples = sample(G, cfg.train.num_samples, cfg.train.sample_seed)
    last = state["history"][-1]
    metrics = {
        **_summary(state, trained, split),
        "d_loss": last["d_loss"],
        "g_loss": last["g_loss"],
        "sample_diversity": sample_diversity(ema_samples, real),
        "colour_hist_distance": colour_distance(ema_samples, real),
        "sample_diversity_raw_generator": sample_diversity(raw_samples, real),
        "colour_hist_distance_raw_generator": colour_distance(raw_samples, real),
        # the floor: two sets of real images (val against the held-out split)
        "colour_hist_distance_real": colour_distance(val_real.permute(0, 2, 3, 1).numpy(), real),
    }
    with atomic_dir(trained.outputs["model"]) as tmp:
        save_model_dir(tmp, "gan", {"generator": G, "generator_ema": G_ema, "discriminator": D}, cfg.model,
                       extra={"ray_run": trained.run_name, "data_hash": trained.data_version["data_hash"],
                              "epochs": len(state["history"]), "steps": state["step"],
                              "metrics": without_wall_clock(metrics)})
    with atomic_dir(trained.outputs["reports"]) as tmp:
        save_png(tmp / "samples.png", image_grid(sample(G_ema, 64, cfg.train.sample_seed), nrow=8))
        z = torch.randn(16, cfg.model.latent_dim, generator=torch.Generator().manual_seed(cfg.train.sample_seed))
        rows = [interpolate(G_ema, z[i], z[i + 1], 10, method="slerp") for i in range(0, 16, 2)]
        save_png(tmp / "interpolations.png", image_grid(np.concatenate(rows), nrow=10))
        save_png(tmp / "progress.png", image_grid(grid_rows(state["progress"]), nrow=8))
    return metrics


VAE = Family(name="vae", loop=train_loop_per_worker_vae, inputs=INPUTS, outputs={"reports": "reports/vae"},
             loop_config=loop_config, data_version=data_version, export=export_vae, curve_keys=VAE_CURVE_KEYS,
             evaluate="components.generative.evaluation:evaluate_vae_folder", eval_outputs=("model", "reports"),
             registration="components.registry:VAE",
             progress_keys=("train_elbo", "val_elbo", "sample_diversity", "train_images_per_s"))
GAN = Family(name="gan", loop=train_loop_per_worker_gan, inputs=INPUTS, outputs={"reports": "reports/gan"},
             loop_config=loop_config, data_version=data_version, export=export_gan, curve_keys=GAN_CURVE_KEYS,
             evaluate="components.generative.evaluation:evaluate_gan", eval_outputs=("model", "reports"),
             registration="components.registry:GAN",
             progress_keys=("d_loss", "g_loss", "d_real", "d_fake", "train_images_per_s"))
