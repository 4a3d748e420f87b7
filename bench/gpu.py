"""The GPU check: every compute path of the pipeline on one GPU, in a few minutes, with figures.

    bash bench/gpu.sh            # on a machine with a CUDA GPU (under 5 min on one H100)
    bash bench/gpu.sh --dry      # the same code on the CPU, tiny sizes (CI runs this)

What it runs, each on the GPU with ``precision: auto`` (bf16 autocast where the GPU has it):

1. **features**: the features stage's model callable (:class:`~components.features.extract.Featurizer`,
   channels-last, the default backbone and shape) over synthetic 64 px images: images/s.
2. **training**: each family's own loop (``fit_captioner``, ``fit_vae``, ``fit_gan``,
   ``fit_imagine``; the image families with ``channels_last: true``) under Ray Train's ``TorchTrainer`` with one GPU worker (so the NCCL
   process group), a few hundred steps on in-memory synthetic data: samples/s of the
   epochs after the first.
3. **beam search**: the attention captioner's batched beam search (beam 3) on the GPU: images/s.

Each line gives the peak GPU memory of its process (``torch.cuda.max_memory_allocated``).
``--dry`` runs the same code on the CPU with tiny sizes and the gloo backend: it checks the script,
not the speed (its figures are not GPU figures). The figures of a real run go to README §Speed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _peak_mb(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def bench_features(device: torch.device, *, num_images: int, params: Any) -> dict[str, float]:
    """The features stage's callable over ``num_images`` synthetic images; images/s after a warm-up batch."""
    from bench.generative.__main__ import scenes
    from components.features.extract import Featurizer, ModelOptions
    from components.features.weights import load_backbone

    f = params.features
    backbone, _ = load_backbone(f.backbone, weights="random", seed=0, grid_size=f.grid_size, stage=f.stage)
    options = ModelOptions(backbone=f.backbone, grid_size=f.grid_size, stage=f.stage, dtype=f.dtype,
                           device=device.type, precision="auto", channels_last=True, threads=torch.get_num_threads())
    featurize = Featurizer(None, options, backbone=backbone)
    size = f.input_size or 224
    images = scenes(min(num_images, 256), size).permute(0, 2, 3, 1).numpy()  # (N, S, S, 3) uint8, reused
    batch = f.batch_size
    _reset_peak(device)
    featurize({"image_id": np.arange(batch), "image": images[:batch]})  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start, done = time.perf_counter(), 0
    while done < num_images:
        rows = np.arange(done, done + batch) % len(images)
        featurize({"image_id": rows, "image": images[rows]})
        done += batch
    seconds = time.perf_counter() - start
    return {"images_per_s": done / seconds, "peak_mb": _peak_mb(device), "bf16": featurize.autocast is not None}


def _worker(config: dict[str, Any]) -> None:
    """Ray Train worker: one family's loop, then its peak GPU memory into ``config['out']``."""
    from components.train.session import RaySession

    session = RaySession()
    device = session.device
    _reset_peak(device)
    family, data = config["family"], config["data"]
    if family == "captioner":
        from components.captioning.fit import fit_captioner
        from bench.captioner.__main__ import _tiny_caption_data

        state = fit_captioner(session, data=_tiny_caption_data(data["num_images"], **data["shape"]),
                              model_params=config["model"], cfg=config["train"])
    elif family in ("vae", "gan"):
        from components.generative.fit import fit_gan, fit_vae

        fn = fit_vae if family == "vae" else fit_gan
        state = fn(session, train_images=data["train"], val_images=data["val"], model_cfg=config["model"],
                   cfg=config["train"])
    else:
        from components.imagine.fit import fit_imagine

        state = fit_imagine(session, train_images=data["train"], train_tokens=data["train_tokens"],
                            val_images=data["val"], val_tokens=data["val_tokens"], vocab_size=data["vocab_size"],
                            model_cfg=config["model"], cfg=config["train"])
    if session.rank == 0:
        Path(config["out"]).write_text(json.dumps({"peak_mb": _peak_mb(device), "history": state["history"],
                                                   "backend": torch.distributed.get_backend()
                                                   if torch.distributed.is_initialized() else "none"}))


def bench_training(family: str, device: torch.device, *, num_images: int, epochs: int, params: Any,
                   storage: Path) -> dict[str, Any]:
    """``family``'s loop under TorchTrainer, 1 worker (a GPU one unless ``device`` is the CPU)."""
    from bench.generative.__main__ import imagine_data, scenes
    from components.features.backbones import get_spec
    from components.train.config import ScalingParams
    from components.train.ray_trainer import fit, make_trainer

    group = getattr(params, f"train_{family}")
    replace: dict[str, Any] = {"epochs": epochs, "precision": "auto", "fail_at_epoch": -1}
    if family == "captioner":
        replace["early_stopping_patience"] = 0
    if family in ("vae", "gan", "imagine"):
        replace["num_samples"] = 16
        replace["channels_last"] = device.type == "cuda"  # cuDNN's convolutions prefer NHWC under bf16
    if family == "vae":
        replace["iw_samples"] = 0
    cfg = dataclasses.replace(group.train, **replace)
    model = group.model
    if family == "captioner":
        f = params.features
        data = {"num_images": num_images,
                "shape": {"positions": f.grid_size ** 2, "channels": get_spec(f.backbone).stage_channels(f.stage)}}
        per_epoch = num_images * 5 * 0.8
        rate_key = "train_captions_per_s"
    else:
        size = model.image_size
        train, val = scenes(num_images, size), scenes(32, size, seed=1)
        data = {"train": train, "val": val}
        if family == "imagine":
            data.update(imagine_data(train, val))
        per_epoch = num_images
        rate_key = "train_images_per_s"
    out = storage / f"{family}.json"
    trainer = make_trainer(_worker, {"family": family, "data": data, "model": model, "train": cfg, "out": str(out)},
                           scaling=ScalingParams(num_workers=1, use_gpu=device.type == "cuda", max_failures=0),
                           cpus_per_worker=1, run_name=f"bench-gpu-{family}", storage_path=str(storage))
    start = time.perf_counter()
    fit(trainer)
    total = time.perf_counter() - start
    result = json.loads(out.read_text())
    history = result["history"]
    rates = [row[rate_key] for row in history if rate_key in row]
    steady = float(np.mean(rates[1:] or rates)) if rates else float("nan")
    steps = int(per_epoch // cfg.batch_size) * epochs
    return {"samples_per_s": steady, "peak_mb": result["peak_mb"], "backend": result["backend"],
            "steps": steps, "seconds": total,
            "bf16": bool(history and history[-1].get("bf16_autocast"))}


def bench_beam(device: torch.device, *, num_images: int, params: Any) -> dict[str, float]:
    """Batched beam search (beam 3) of a random-weight attention captioner over random features."""
    from components.captioning.decoding import beam_search
    from components.captioning.models import CaptionerConfig, build_model
    from components.features.backbones import get_spec
    from components.train.precision import autocast_dtype
    from components.train.session import autocast

    f, m = params.features, params.train_captioner.model
    channels, positions = get_spec(f.backbone).stage_channels(f.stage), f.grid_size ** 2
    cfg = CaptionerConfig(vocab_size=40, feature_dim=channels, num_positions=positions,
                          **{**dataclasses.asdict(m), "dropout": 0.0})
    torch.manual_seed(0)
    model = build_model(cfg).to(device).eval()
    grid = torch.randn(num_images, positions, channels, device=device)
    batch = 256
    _reset_peak(device)
    with torch.inference_mode(), autocast(device, autocast_dtype("auto", device)):
        beam_search(model, grid[:batch], grid[:batch].mean(1), beam_size=3, max_length=21)  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for s in range(0, num_images, batch):
            beam_search(model, grid[s : s + batch], grid[s : s + batch].mean(1), beam_size=3, max_length=21)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return {"images_per_s": num_images / (time.perf_counter() - start), "peak_mb": _peak_mb(device)}


SIZES = {  # (features images, training images, epochs, beam images)
    "gpu": {"features": 20000, "train": 4000, "epochs": 3, "beam": 10000},
    "dry": {"features": 128, "train": 64, "epochs": 2, "beam": 64},
}


def main(argv: list[str] | None = None) -> int:
    from components.ray_adapter import init_ray
    from pipelines.config import load_params

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry", action="store_true", help="on the CPU, tiny sizes: checks the script, not the speed")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--families", nargs="*", default=["captioner", "vae", "gan", "imagine"])
    args = parser.parse_args(argv)
    if not args.dry and not torch.cuda.is_available():
        parser.error("no CUDA GPU here: run with --dry to check the script on the CPU")
    device = torch.device("cpu" if args.dry else "cuda")
    sizes = SIZES["dry" if args.dry else "gpu"]
    params = load_params(args.params)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {os.cpu_count()} cores (dry run)"
    print(f"bench.gpu on {name}; torch {torch.__version__}; precision auto", flush=True)
    started = time.perf_counter()

    r = bench_features(device, num_images=sizes["features"], params=params)
    print(f"features  {params.features.backbone} stage {params.features.stage} at {params.features.input_size} px: "
          f"{r['images_per_s']:9.1f} images/s   peak {r['peak_mb']:8.1f} MiB   bf16 {r['bf16']}", flush=True)

    init_ray()  # a local instance sees the GPU; on a cluster, RAY_ADDRESS
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as storage:
        for family in args.families:
            r = bench_training(family, device, num_images=sizes["train"], epochs=sizes["epochs"], params=params,
                               storage=Path(storage))
            unit = "captions" if family == "captioner" else "images"
            print(f"train     {family:<10} {r['steps']:5d} steps: {r['samples_per_s']:9.1f} {unit}/s   "
                  f"peak {r['peak_mb']:8.1f} MiB   bf16 {r['bf16']}   backend {r['backend']}   "
                  f"({r['seconds']:.0f} s with start-up)", flush=True)

    r = bench_beam(device, num_images=sizes["beam"], params=params)
    print(f"beam      beam 3, batch 256: {r['images_per_s']:9.1f} images/s   peak {r['peak_mb']:8.1f} MiB", flush=True)
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
