"""Benchmark: VAE / GAN training under Ray Train (1 worker) against a plain PyTorch loop.

    .venv/bin/python -m bench.generative                       # both models, params.yaml's configs
    .venv/bin/python -m bench.generative --model gan --epochs 5 --num-images 2000
    .venv/bin/python -m bench.generative --precision            # precision auto vs fp32, same loop

Three runs of the same training on the same images (synthetic scenes rendered
in memory, the demo dataset's generator), the same model and optimiser
configs (``params.yaml``'s ``train_vae`` / ``train_gan``), seed and threads:

``plain``  a loop in the style of pytorch/examples (``vae/main.py``,
           ``dcgan/main.py``): a shuffling ``DataLoader``, one train step per
           batch, nothing else: no evaluation, diagnostics or checkpoints.
``local``  the stage's loop (``fit_vae`` / ``fit_gan``) in this process
           (``LocalSession``): the same steps plus per-epoch evaluation,
           diagnostics and in-memory checkpoints.
``ray``    the stage's loop under ``TorchTrainer`` with 1 worker (a separate
           process, ``torch`` threads = ``--threads``), checkpoints to disk.

Throughput is steady state: training images/s measured around the batch loop
of each epoch, averaged over the epochs after the first (warm-up). The ratio
``ray / plain`` is the figure of the issue (target: at most 10% slower, i.e.
>= 0.90). Start-up (Ray start, worker group start, data hand-over, until the
first epoch begins) and the per-epoch overhead of evaluation and checkpoints
are printed on their own lines.

``--precision``: instead, the stage's loop in this process (``local``) at
``precision: fp32`` and at ``auto`` (bf16 autocast on a CPU with AMX / AVX-512
BF16), alternated over ``--rounds`` (3); the median ratio of steady-state
training images/s, and the last epoch's losses of both sides.

``--channels-last``: the same, with ``channels_last: false`` against ``true``
(at the params' precision). These two axes also take ``--model imagine`` (the
caption-conditioned GAN of ``train_imagine``, on the scenes' reference captions,
as ``bench.gpu``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from typing import Any

import numpy as np
import torch

from components.data.synthetic import render_scene, sample_scene
from components.generative.augment import AUGMENTATIONS
from components.generative.data import ImageTensorDataset
from components.generative.ema import EMA
from components.generative.fit import fit_gan, fit_vae
from components.generative.models import MODELS, build_gan, build_vae
from components.generative.steps import gan_train_step, make_gan_optimizers, vae_train_step
from components.ray_adapter import init_ray
from components.train.session import LocalSession, RaySession
from pipelines.config import load_params



def scenes(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """``n`` synthetic scenes as uint8 ``(n, 3, size, size)``."""
    images = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        images.append(np.asarray(render_scene(sample_scene(rng), image_size=size, rng=rng)))
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


def scene_captions(images: torch.Tensor, seed: int) -> tuple[list[list[list[int]]], int]:
    """The reference captions of the scenes ``scenes(len(images), size, seed)`` drew, as word ids over a
    vocabulary of them (``<start>`` and ``<end>`` left out), and that vocabulary's size."""
    from components.data.scene_language import reference_captions
    from components.data.text import Vocab, tokenize

    captions = []
    for i in range(len(images)):
        rng = np.random.default_rng([seed, i])
        captions.append(reference_captions(sample_scene(rng), rng))
    vocab = Vocab.build([tokenize(c) for caps in captions for c in caps], min_word_count=1, max_caption_length=20)
    return [[vocab.encode(tokenize(c))[1:-1] for c in caps] for caps in captions], len(vocab)


def imagine_data(train: torch.Tensor, val: torch.Tensor) -> dict[str, Any]:
    """``fit_imagine``'s captions for ``scenes(n, size)`` (train) and ``scenes(m, size, seed=1)`` (val): every
    caption of each training scene, the first of each validation scene, and a vocabulary size covering both."""
    train_tokens, train_vocab = scene_captions(train, 0)
    val_tokens, val_vocab = scene_captions(val, 1)
    return {"train_tokens": train_tokens, "val_tokens": [caps[0] for caps in val_tokens],
            "vocab_size": max(train_vocab, val_vocab)}


def steady(rates: list[float]) -> float:
    return float(np.mean(rates[1:] or rates))


def run_plain(model: str, cfg: Any, images: torch.Tensor) -> list[float]:
    """pytorch/examples-style loop; returns training images/s per epoch."""
    torch.manual_seed(cfg.train.seed)
    data = ImageTensorDataset(images, value_range=MODELS[model].value_range)
    loader = torch.utils.data.DataLoader(data, batch_size=cfg.train.batch_size, shuffle=True, drop_last=True)
    if model == "vae":
        net = build_vae(cfg.model)
        opt = torch.optim.Adam(net.parameters(), lr=cfg.train.lr, betas=cfg.train.betas)
    else:
        G, D = build_gan(cfg.model)
        ema = EMA(G, decay=cfg.model.ema_decay)
        opt_g, opt_d = make_gan_optimizers(G, D, lr_g=cfg.train.lr_g, lr_d=cfg.train.lr_d, betas=cfg.train.betas)
    rates, step = [], 0
    for _ in range(cfg.train.epochs):
        start, seen = time.perf_counter(), 0
        for batch in loader:
            if model == "vae":
                vae_train_step(net, batch, opt)
            else:
                gan_train_step(G, D, batch, opt_g, opt_d, loss=cfg.model.loss, n_critic=cfg.model.n_critic,
                               gp_weight=cfg.model.gp_weight, ema=ema, step=step,
                               augment=AUGMENTATIONS[cfg.train.augment])
            seen += batch.shape[0]
            step += 1
        rates.append(seen / (time.perf_counter() - start))
    return rates


def _fit(model: str, session, config: dict[str, Any]) -> dict[str, Any]:
    if model == "imagine":
        from components.imagine.fit import fit_imagine

        train, val = config["train_images"], config["val_images"]
        return fit_imagine(session, train_images=train, val_images=val, **imagine_data(train, val),
                           model_cfg=config["model"], cfg=config["train"])
    fn = fit_vae if model == "vae" else fit_gan
    return fn(session, train_images=config["train_images"], val_images=config["val_images"],
              model_cfg=config["model"], cfg=config["train"], storage_dir=config.get("storage_dir", ""))


def _ray_loop(config: dict[str, Any]) -> None:
    _fit(config["kind"], RaySession(), config)


def epoch_walls(history: list[dict[str, float]]) -> list[float]:
    """Seconds from one epoch's start to the next's: training + evaluation + report/checkpoint."""
    starts = [row["epoch_start_time"] for row in history]
    return list(np.diff(starts))


def bench_one(model: str, cfg: Any, train: torch.Tensor, val: torch.Tensor, threads: int) -> dict[str, Any]:
    from components.train.config import ScalingParams
    from components.train.ray_trainer import fit, make_trainer

    torch.set_num_threads(threads)
    out: dict[str, Any] = {}
    out["plain"] = run_plain(model, cfg, train)

    config = {"kind": model, "train_images": train, "val_images": val, "model": cfg.model, "train": cfg.train}
    local = LocalSession()
    _fit(model, local, config)
    out["local"] = [row["train_images_per_s"] for row in local.history]
    out["local_walls"] = epoch_walls(local.history)

    start = time.time()
    init_ray(num_cpus=max(threads, os.cpu_count() or 1))
    ray_start = time.time() - start
    with tempfile.TemporaryDirectory(prefix="bench-generative-") as storage:
        trainer = make_trainer(_ray_loop, config, scaling=ScalingParams(num_workers=1, use_gpu=False, max_failures=0),
                               cpus_per_worker=threads,
                               run_name=f"bench-{model}", storage_path=storage)
        fit_start = time.time()
        state = fit(trainer)
        total = time.time() - fit_start
    history = state["history"]
    out["ray"] = [row["train_images_per_s"] for row in history]
    out["ray_walls"] = epoch_walls(history)
    out["ray_start_s"] = ray_start
    out["worker_start_s"] = history[0]["epoch_start_time"] - fit_start
    out["ray_total_s"] = total
    return out


def report(model: str, cfg: Any, n: int, threads: int, r: dict[str, Any]) -> None:
    plain, local, ray = steady(r["plain"]), steady(r["local"]), steady(r["ray"])
    print(f"\n== {model}: {n} images of {cfg.model.image_size} px, batch {cfg.train.batch_size}, "
          f"{cfg.train.epochs} epochs, {threads} torch threads ==")
    for name, rates in (("plain PyTorch loop", r["plain"]), ("fit, in process", r["local"]),
                        ("fit, Ray Train 1 worker", r["ray"])):
        print(f"  {name:<24} {steady(rates):8.1f} images/s   (per epoch: {', '.join(f'{x:.0f}' for x in rates)})")
    print(f"  ratio ray / plain        {ray / plain:8.3f}   (target >= 0.90: at most 10% slower)  "
          f"{'OK' if ray / plain >= 0.9 else 'SLOWER'}")
    print(f"  ratio local / plain      {local / plain:8.3f}")
    started = f"{r['ray_start_s']:.1f} s" if r["ray_start_s"] >= 0.5 else "0 s (already running)"
    print(f"  start-up: Ray start {started}, worker group start + data to the first epoch "
          f"{r['worker_start_s']:.1f} s; Ray fit total {r['ray_total_s']:.1f} s")
    if r["ray_walls"]:
        print(f"  epoch wall incl. eval + diagnostics + report: ray {np.mean(r['ray_walls'][1:] or r['ray_walls']):.2f} s,"
              f" in process {np.mean(r['local_walls'][1:] or r['local_walls']):.2f} s "
              f"(training alone: {len(r['plain']) and n / plain:.2f} s)")


SIDES = {  # axis: (param key, the baseline side, the other side)
    "precision": ("precision", "fp32", "auto"),
    "channels_last": ("channels_last", False, True),
}


def bench_sides(model: str, cfg: Any, train: torch.Tensor, val: torch.Tensor, threads: int,
                rounds: int, axis: str) -> None:
    """The stage's loop in this process at the two values of one train key, alternated over ``rounds``."""
    from components.train.precision import resolve

    key, base, other = SIDES[axis]
    torch.set_num_threads(threads)
    print(f"\n== {model}: {len(train)} images of {cfg.model.image_size} px, batch {cfg.train.batch_size}, "
          f"{cfg.train.epochs} epochs (the first is warm-up), {threads} torch threads; precision auto is "
          f"{resolve('auto', 'cpu')} here; {key}: {base} against {other}"
          f"{'' if axis == 'precision' else f' (precision {cfg.train.precision})'} ==")
    ratios = []
    loss = {"vae": "train_elbo"}.get(model, "d_loss")
    for r in range(rounds):
        rates, last = {}, {}
        for value in (base, other):
            run_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **{key: value}))
            local = LocalSession()
            _fit(model, local, {"train_images": train, "val_images": val, "model": run_cfg.model,
                                "train": run_cfg.train})
            rates[value] = steady([row["train_images_per_s"] for row in local.history])
            last[value] = local.history[-1].get(loss, float("nan"))
        ratios.append(rates[other] / rates[base])
        print(f"  round {r + 1}/{rounds}: {key} {base} {rates[base]:7.1f} images/s ({loss} {last[base]:.4g}), "
              f"{other} {rates[other]:7.1f} images/s ({loss} {last[other]:.4g})")
    target = "; target >= 1.8" if axis == "precision" else ""
    print(f"  ratio {other} / {base} (steady state): {np.median(ratios):.3f} (median of {rounds}: "
          f"{', '.join(f'{x:.3f}' for x in ratios)}{target})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("vae", "gan", "both", "imagine"), default="both",
                        help="imagine: with --precision or --channels-last only")
    parser.add_argument("--num-images", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run; the first is warm-up")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: params.yaml's)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--precision", action="store_true", help="compare precision fp32 with auto instead")
    parser.add_argument("--channels-last", action="store_true",
                        help="compare channels_last false with true instead (at the params' precision)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="--precision, --channels-last: alternate the sides this many times")
    args = parser.parse_args(argv)
    if args.precision and args.channels_last:
        parser.error("--precision and --channels-last: one axis at a time")
    axis = "precision" if args.precision else "channels_last" if args.channels_last else None
    if args.model == "imagine" and axis is None:
        parser.error("--model imagine: with --precision or --channels-last (Ray against a plain loop: vae, gan)")
    params = load_params(args.params)
    models = ("vae", "gan") if args.model == "both" else (args.model,)
    for model in models:
        cfg = {"vae": params.train_vae, "gan": params.train_gan, "imagine": params.train_imagine}[model]
        threads = args.threads or cfg.train.threads_per_worker
        # the diagnostics see 64 samples; the IWAE bound is off (it is a last-epoch cost, not throughput)
        train_cfg = dataclasses.replace(cfg.train, epochs=args.epochs, threads_per_worker=threads,
                                        num_samples=64, **({"iw_samples": 0} if model == "vae" else {}))
        cfg = dataclasses.replace(cfg, train=train_cfg)
        train = scenes(args.num_images, cfg.model.image_size)
        val = scenes(64, cfg.model.image_size, seed=1)
        if axis is not None:
            bench_sides(model, cfg, train, val, threads, args.rounds, axis)
        else:
            report(model, cfg, args.num_images, threads, bench_one(model, cfg, train, val, threads))


if __name__ == "__main__":
    main()
