"""The VAE's and the GAN's part of the ``evaluate`` stage: sample metrics, the VAE's bound, report figures.

* ``metrics/gan.json``: FID, KID, improved precision/recall and the Inception
  Score (null without Inception weights) of ``num_fake`` samples of the
  sampler (the GAN's EMA generator) against the split's real images.
* ``metrics/vae.json``: the same for prior samples, and the ELBO, IWAE NLL and
  bits/dim on the split, recomputed from the model folder.
* Report sections: the training stage's PNGs (samples, reconstructions,
  interpolations), under the section ids both families share.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from components.data.folders import PreparedDir
from components.generative.data import image_splits, load_images
from components.generative.fit import evaluate_vae
from components.generative.io import load_generator
from components.generative.sampling import sample
from components.metrics.generative import generative_scores
from components.report import Section, figure
from components.train.family import Evaluation

# the training stage's PNGs each family shows: (section id, file, caption)
FIGURES = {
    "vae": (("samples", "samples.png", "VAE: prior samples"),
            ("reconstructions", "reconstructions.png", "VAE: test images (odd rows) and their reconstructions"),
            ("interpolations", "interpolations.png", "VAE: linear paths between two test images' posterior means")),
    "gan": (("samples", "samples.png", "GAN: EMA generator samples"),
            ("interpolations", "interpolations.png", "GAN: spherical paths between two latent codes")),
}


def device() -> torch.device:
    """A GPU when this process has one (models and feature network), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def real_images(prepared: Path, split: str, size: int) -> np.ndarray:
    """uint8 ``(N, size, size, 3)``: every image of ``split``."""
    paths = image_splits(prepared)
    if not paths.get(split):
        raise FileNotFoundError(f"{PreparedDir(prepared).images} has no '{split}' images (evaluate.split)")
    return load_images(paths[split], size=size, num_workers=2).permute(0, 2, 3, 1).numpy()


def sample_metrics(evaluation: Evaluation) -> tuple[dict, torch.nn.Module, np.ndarray]:
    """FID/KID/precision/recall (/IS) of ``cfg.num_fake`` samples; returns the metrics, the sampler, the real set."""
    cfg = evaluation.cfg
    sampler, model_cfg = load_generator(evaluation.outputs["model"], map_location=device())
    real = real_images(evaluation.prepared, cfg.split, model_cfg.image_size)
    fake = sample(sampler, cfg.num_fake, cfg.seed)  # (num_fake, S, S, 3) uint8
    scores = generative_scores(evaluation.feature_network(), real, fake, kid_subsets=cfg.kid_subsets,
                               kid_subset_size=cfg.kid_subset_size, pr_k=cfg.pr_neighbours, seed=cfg.seed)
    return {"split": cfg.split, **scores}, sampler, real


def figure_sections(family: str, reports: Path) -> list[Section]:
    """The family's training PNGs, one section per figure (sections of one id merge in the report)."""
    sections = []
    for section, name, caption in FIGURES[family]:
        path = reports / name
        if not path.is_file():
            raise FileNotFoundError(f"no {path} (run the train_{family} stage first)")
        with Image.open(path) as im:
            sections.append(Section(section, section.capitalize(), figure(im.convert("RGB"), caption, scale=2)))
    return sections


def evaluate_gan(evaluation: Evaluation) -> tuple[dict[str, Any], list[Section]]:
    """The GAN's sample metrics and figures."""
    metrics, _, _ = sample_metrics(evaluation)
    return metrics, figure_sections("gan", evaluation.outputs["reports"])


def evaluate_vae_folder(evaluation: Evaluation) -> tuple[dict[str, Any], list[Section]]:
    """The VAE's bound on the split (recomputed), its sample metrics (no IS) and figures."""
    cfg = evaluation.cfg
    scores, vae, real = sample_metrics(evaluation)
    bound = evaluate_vae(vae, torch.as_tensor(real).permute(0, 3, 1, 2).contiguous(), iw_samples=cfg.iw_samples,
                         seed=cfg.seed)
    metrics = {"test_elbo": bound["elbo"], "test_bits_per_dim": bound["bits_per_dim"],
               "test_nll_iwae": bound.get("iwae_nll"), "test_iwae_bits_per_dim": bound.get("iwae_bits_per_dim"),
               "test_recon_nll": bound["recon_nll"], "test_kl": bound["kl"], "iw_samples": cfg.iw_samples,
               **{k: v for k, v in scores.items() if k != "inception_score"}}
    return metrics, figure_sections("vae", evaluation.outputs["reports"])


__all__ = ["evaluate_gan", "evaluate_vae_folder", "figure_sections", "real_images", "sample_metrics"]
