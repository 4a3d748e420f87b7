"""DVC stage ``evaluate``: predictions and model folders → the DVC metrics and the HTML report.

    python -m pipelines.evaluate --params params.yaml --prepared data/prepared \
        --predictions data/predictions/captioner --vae models/vae --gan models/gan \
        --vae-reports reports/vae --gan-reports reports/gan --captioner-metrics metrics/captioner.json \
        --vae-metrics metrics/vae.json --gan-metrics metrics/gan.json --report reports/index.html

* ``metrics/captioner.json``: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D and SPICE
  (``components.metrics.captions.coco_scores``; what could not be computed is
  listed in ``unavailable``) of the captioner's predictions on the split, and
  on synthetic data the semantic scores against the scene table.
* ``metrics/vae.json``: the VAE's ELBO, IWAE NLL and bits/dim on the split,
  recomputed here from the model folder, and FID/KID of its prior samples.
* ``metrics/gan.json``: FID, KID, improved precision/recall and the Inception
  Score (null without Inception weights) of the EMA generator's samples.
* ``reports/index.html``: one self-contained page with those tables, each
  shown test image with its generated caption, references and per-word
  attention maps, and the VAE/GAN sample grids, reconstructions and
  interpolations.

Every output is written atomically.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image

from components import tracking
from components.config import flatten, to_dict
from components.data.folders import PreparedDir
from components.data.synthetic import read_scenes
from components.generative.data import load_images
from components.generative.family import image_splits
from components.generative.fit import evaluate_vae
from components.generative.io import load_generator
from components.generative.sampling import sample
from components.io import atomic_file, write_json
from components.metrics.captions import coco_scores
from components.metrics.generative import FeatureNetwork, feature_network, generative_scores
from components.metrics.semantic import scene_accuracy
from components.report import Section, caption_row, figure, metrics_table, render_page
from pipelines.common import stage_main
from pipelines.config import EvaluateConfig, load_params

log = logging.getLogger("evaluate")

SEMANTIC_KEYS = ("exact_scene_accuracy", "names_all_objects", "object_precision", "object_recall", "object_f1",
                 "relation_precision", "relation_recall", "relation_f1")
# the training stages' PNGs shown in the report: (section, file, caption)
REPORT_FIGURES = (
    ("samples", "vae", "samples.png", "VAE: prior samples"),
    ("samples", "gan", "samples.png", "GAN: EMA generator samples"),
    ("reconstructions", "vae", "reconstructions.png", "VAE: test images (odd rows) and their reconstructions"),
    ("interpolations", "vae", "interpolations.png", "VAE: linear paths between two test images' posterior means"),
    ("interpolations", "gan", "interpolations.png", "GAN: spherical paths between two latent codes"),
)


def _device() -> torch.device:
    """A GPU when this process has one (models and feature network), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def read_predictions(path: Path) -> dict[int, str]:
    """A COCO results file (``[{"image_id", "caption"}]``) as image id → caption."""
    if not path.is_file():
        raise FileNotFoundError(f"no predictions file {path} (run the train_captioner stage first)")
    return {int(r["image_id"]): r["caption"] for r in json.loads(path.read_text())}


def read_references(prepared: Path, split: str) -> dict[int, list[str]]:
    """The split's reference captions from ``captions.parquet`` (as prepared), image id → captions."""
    table = pq.read_table(PreparedDir(prepared).captions, columns=["image_id", "split", "caption"]).to_pydict()
    refs: dict[int, list[str]] = {}
    for image_id, s, caption in zip(table["image_id"], table["split"], table["caption"]):
        if s == split:
            refs.setdefault(int(image_id), []).append(caption)
    return refs


def caption_metrics(cfg: EvaluateConfig, predictions: dict[int, str], references: dict[int, list[str]],
                    prepared: Path) -> dict:
    """``metrics/captioner.json``: COCO metrics, and the semantic scores on synthetic data (else null)."""
    metrics = {"split": cfg.split, **coco_scores(predictions, references, spice=cfg.spice)}
    scenes_file = PreparedDir(prepared).scenes
    semantic = scene_accuracy(predictions, read_scenes(scenes_file)) if scenes_file.exists() else {}
    return {**metrics, **{k: semantic.get(k) for k in SEMANTIC_KEYS}}


def real_images(prepared: Path, split: str, size: int) -> np.ndarray:
    """uint8 ``(N, size, size, 3)``: every image of ``split``."""
    paths = image_splits(prepared)
    if not paths.get(split):
        raise FileNotFoundError(f"{PreparedDir(prepared).images} has no '{split}' images (evaluate.split)")
    return load_images(paths[split], size=size, num_workers=2).permute(0, 2, 3, 1).numpy()


def generative_metrics(cfg: EvaluateConfig, net: FeatureNetwork, model_dir: Path, prepared: Path
                       ) -> tuple[dict, torch.nn.Module, np.ndarray]:
    """FID/KID/precision/recall (/IS) of ``cfg.num_fake`` samples; returns the metrics, the sampler, the real set."""
    sampler, model_cfg = load_generator(model_dir, map_location=_device())
    real = real_images(prepared, cfg.split, model_cfg.image_size)
    fake = sample(sampler, cfg.num_fake, cfg.seed)  # (num_fake, S, S, 3) uint8
    scores = generative_scores(net, real, fake, kid_subsets=cfg.kid_subsets, kid_subset_size=cfg.kid_subset_size,
                               pr_k=cfg.pr_neighbours, seed=cfg.seed)
    return {"split": cfg.split, **scores}, sampler, real


def vae_metrics(cfg: EvaluateConfig, net: FeatureNetwork, model_dir: Path, prepared: Path) -> dict:
    """``metrics/vae.json``: ELBO, IWAE NLL, bits/dim on the split (recomputed), and the sample metrics."""
    scores, vae, real = generative_metrics(cfg, net, model_dir, prepared)
    bound = evaluate_vae(vae, torch.as_tensor(real).permute(0, 3, 1, 2).contiguous(), iw_samples=cfg.iw_samples,
                         seed=cfg.seed)
    return {"test_elbo": bound["elbo"], "test_bits_per_dim": bound["bits_per_dim"],
            "test_nll_iwae": bound.get("iwae_nll"), "test_iwae_bits_per_dim": bound.get("iwae_bits_per_dim"),
            "test_recon_nll": bound["recon_nll"], "test_kl": bound["kl"], "iw_samples": cfg.iw_samples,
            **{k: v for k, v in scores.items() if k != "inception_score"}}


def caption_section(cfg: EvaluateConfig, prepared: Path, predictions_dir: Path, predictions: dict[int, str],
                    references: dict[int, list[str]]) -> Section:
    """The first ``cfg.report_images`` images of the split with caption, references, attention, semantic check."""
    shown = sorted(predictions)[: cfg.report_images]
    table = pq.read_table(PreparedDir(prepared).images, columns=["image_id", "path"]).to_pydict()
    paths = dict(zip(table["image_id"], table["path"]))
    attention_file = predictions_dir / f"{cfg.split}_attention.npz"
    attention = np.load(attention_file) if attention_file.exists() else None
    scenes_file = PreparedDir(prepared).scenes
    scenes = read_scenes(scenes_file) if scenes_file.exists() else None
    rows = []
    for image_id in shown:
        with Image.open(paths[image_id]) as im:
            image = np.asarray(im.convert("RGB"))  # (H, W, 3)
        notes = ""
        if scenes is not None:
            s = scene_accuracy({image_id: predictions[image_id]}, scenes)
            notes = (f'<div class="note">objects P/R {s["object_precision"]:.2f}/{s["object_recall"]:.2f}, '
                     f'exact scene: {"yes" if s["exact_scene_accuracy"] else "no"}</div>')
        weights = attention[str(image_id)].astype(np.float32) if attention is not None else None
        rows.append(caption_row(image, predictions[image_id], references[image_id], image_id=image_id,
                                attention=weights, notes=notes))
    what = "per-word attention maps (hot colours: attended; each map min-max scaled)" if attention is not None else "no attention (Show and Tell)"
    intro = f'<p class="note">{len(shown)} of {len(predictions)} {cfg.split} images; generated caption in bold, ' \
            f"references below; {what}.</p>"
    return Section("captions", "Captions", intro + "".join(rows))


def figure_sections(reports: dict[str, Path]) -> list[Section]:
    """Sample grids, reconstructions and interpolations from the training stages' PNGs."""
    bodies: dict[str, str] = {"samples": "", "reconstructions": "", "interpolations": ""}
    for section, family, name, caption in REPORT_FIGURES:
        path = reports[family] / name
        if not path.is_file():
            raise FileNotFoundError(f"no {path} (run the train_{family} stage first)")
        with Image.open(path) as im:
            bodies[section] += figure(im.convert("RGB"), caption, scale=2)
    return [Section(key, key.capitalize(), body) for key, body in bodies.items()]


def build_report(cfg: EvaluateConfig, *, metrics: dict[str, dict], captions: Section, reports: dict[str, Path]
                 ) -> str:
    """The HTML page: metric tables, captions, samples, reconstructions, interpolations."""
    tables = '<div class="tables">' + "".join(
        metrics_table(m, title=f"metrics/{name}.json") for name, m in metrics.items()) + "</div>"
    network = metrics["gan"]["feature_network"]
    intro = (f"split: {cfg.split}; FID/KID feature network: {network}"
             + ("" if network.startswith("inception") else " (not Inception FID: in-domain numbers, README §Evaluation)"))
    sections = [Section("metrics", "Metrics", tables), captions, *figure_sections(reports)]
    return render_page("capsynth evaluation", sections, intro=intro)


def run(cfg: EvaluateConfig, *, prepared: Path, predictions_dir: Path, vae: Path, gan: Path,
        reports: dict[str, Path], metrics_paths: dict[str, Path], report_path: Path,
        params_file: str = "params.yaml") -> dict:
    """Compute and write the three metrics files (``metrics_paths``: captioner, vae, gan) and the report."""
    with tracking.stage_run("evaluate", params=flatten(to_dict(cfg)), params_file=params_file):
        predictions = read_predictions(predictions_dir / f"{cfg.split}.json")
        references = read_references(prepared, cfg.split)
        net = feature_network(cfg.feature_network, inception_weights=cfg.inception_weights, seed=cfg.feature_seed,
                              input_size=cfg.feature_size, device=_device())
        log.info("FID/KID features: %s on %s", net.name, _device())
        metrics = {
            "captioner": caption_metrics(cfg, predictions, references, prepared),
            "vae": vae_metrics(cfg, net, vae, prepared),
            "gan": generative_metrics(cfg, net, gan, prepared)[0],
        }
        page = build_report(cfg, metrics=metrics, reports=reports,
                            captions=caption_section(cfg, prepared, predictions_dir, predictions, references))
        for name, values in metrics.items():
            write_json(metrics_paths[name], values)
            tracking.log_metrics({f"{name}_{k}": v for k, v in values.items()
                                  if isinstance(v, (int, float)) and not isinstance(v, bool)})
        with atomic_file(report_path) as f:
            f.write(page)
        for path in metrics_paths.values():
            tracking.log_artifacts({"metrics": path})
        tracking.log_artifacts({"report": report_path})
    return metrics


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


@stage_main("evaluate")
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    parser.add_argument("--predictions", type=Path, default=Path("data/predictions/captioner"))
    parser.add_argument("--vae", type=Path, default=Path("models/vae"))
    parser.add_argument("--gan", type=Path, default=Path("models/gan"))
    parser.add_argument("--vae-reports", type=Path, default=Path("reports/vae"))
    parser.add_argument("--gan-reports", type=Path, default=Path("reports/gan"))
    for name in ("captioner", "vae", "gan"):
        parser.add_argument(f"--{name}-metrics", type=Path, default=Path(f"metrics/{name}.json"))
    parser.add_argument("--report", type=Path, default=Path("reports/index.html"))
    args = parser.parse_args(argv)
    cfg = load_params(args.params).evaluate
    metrics = run(cfg, prepared=args.prepared, predictions_dir=args.predictions, vae=args.vae, gan=args.gan,
                  reports={"vae": args.vae_reports, "gan": args.gan_reports},
                  metrics_paths={"captioner": args.captioner_metrics, "vae": args.vae_metrics, "gan": args.gan_metrics},
                  report_path=args.report, params_file=args.params)
    cap, vae, gan = metrics["captioner"], metrics["vae"], metrics["gan"]
    log.info("captioner: CIDEr-D %.3f, BLEU-4 %.3f, METEOR %s, exact scenes %s; unavailable: %s", cap["cider"],
             cap["bleu_4"], _fmt(cap["meteor"]), _fmt(cap["exact_scene_accuracy"]),
             ", ".join(cap["unavailable"]) or "none")
    log.info("vae: ELBO %.1f nats, FID %.2f; gan: FID %.2f, KID %.4f, P/R %.2f/%.2f (%s, %d real, %d fake)",
             vae["test_elbo"], vae["fid"], gan["fid"], gan["kid"], gan["precision"], gan["recall"],
             gan["feature_network"], gan["n_real"], gan["n_fake"])


if __name__ == "__main__":
    main()
