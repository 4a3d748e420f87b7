"""Benchmarks of the captioner, each against a baseline measured in the same run.

    .venv/bin/python -m bench.captioner train               # (a) Ray Train, 1 worker vs the same loop without Ray
    .venv/bin/python -m bench.captioner train --precision   # (c) precision auto vs fp32, same loop
    .venv/bin/python -m bench.captioner beam                # (b) batched beam search vs one image at a time
    .venv/bin/python -m bench.captioner beam --precision fp32   # (b) the same in float32
    .venv/bin/python -m bench.captioner step                # (d) one train step, fp32 vs bf16 autocast
    .venv/bin/python -m bench.captioner step --compare attention   # (d) additive vs dot-product score
    .venv/bin/python -m bench.captioner step --compare model -S attention_dim=64   # (d) params' model vs a variant
    .venv/bin/python -m bench.captioner step --compare baseline --baseline-models OLD.py   # (d) an old loop, fp32
    .venv/bin/python -m bench.captioner scst                # (e) SCST sampled captions/s vs cross-entropy captions/s
    .venv/bin/python -m bench.captioner rewards             # (f) SCST rewards and baselines over seeds: test scores
    .venv/bin/python -m bench.captioner quality -S KEY=VALUE ...   # (g) test scores of one setting, from scratch

(a) Both sides run ``fit_captioner`` on the same generated data and params:
once in this process through a ``LocalSession``, once under ``TorchTrainer``
with one worker and the same torch threads. Throughput is the loop's own
``train_captions_per_s`` (training steps only), averaged over the epochs after
the first; the start-up cost (Ray instance, trainer, worker, data load, first
epoch's extra) is printed on its own line. The two sides alternate over
``--rounds`` (3) and the median ratio is printed: two single runs on a quiet
machine gave 0.881 and 0.948.

(c) ``--precision``: ``fit_captioner`` in this process at ``precision: fp32``
and at ``auto`` (bf16 autocast on a CPU with AMX / AVX-512 BF16), alternated
over the rounds; the median ratio of steady-state captions/s.

(d) ``step``: ``train_step`` of the demo's model (params.yaml's
``train_captioner.model``, the features' shape, a vocabulary of 47) on one fixed
batch (32 captions of ``--length`` tokens, or of ``--min-length`` to
``--length`` tokens padded to the longest as in training: the training pass
skips the padded steps), float32 and bf16 autocast alternated
over the rounds: ms per step and captions/s. It uses only ``build_model`` and
``train_step``, so it also times an older ``components/captioning/models.py``
checked out in its place (the README's before/after figures). ``--compare
attention``: the same model with the additive and with the dot-product
attention score (``train_captioner.model.attention``), both at ``--precision``
(``auto``: bf16 autocast where the CPU has AMX / AVX-512 BF16, else float32).
``--compare model -S KEY=VALUE ...``: the params' model against the same model
with those ``train_captioner.model`` keys changed (YAML values), both at
``--precision``: what a smaller or different model would save a step, before
its quality is measured with ``quality``.
``--compare baseline --baseline-models FILE``: the same model built by another
revision's ``models.py`` in float32 (the loop an issue called "today's")
against this code at ``--precision``.

(b) The same random-initialised Show-Attend-and-Tell model and features, beam
3: ``beam_search`` on batches of ``--batch-size`` images against
``beam_search_single`` (one image at a time), both in ``--precision`` (auto:
bf16 autocast on a CPU with AMX / AVX-512 BF16, as training's ``auto``; fp32).
Each side decodes untimed first (one batch; two images: kernel set-up), then
the two alternate over ``--rounds`` (3); prints both times of each round, the
median speed-up and how many captions differ between the two (expected: none,
in either precision).

(e) ``scst``: the demo's trained model (``models/captioner``, with its
``data/prepared`` and ``data/features``: run ``dvc repro train_captioner``
first) and ``params.yaml``'s ``finetune_captioner.train``. One side is
:func:`~components.captioning.finetune.scst_step` on batches of training images
(``batch_size`` images x ``samples_per_image`` samples: sampling with
log-probabilities, the rewards, the baseline, the backward pass and the
update), the other :func:`~components.captioning.train.train_step` on batches
of 32 of those images' reference captions, both from copies of the same model
in the same precision. They alternate over ``--rounds``; prints captions/s of
each (sampled captions for SCST) and the median ratio.

(f) ``rewards``: the same inputs; for each ``--settings`` entry
(``reward:baseline``) and each of ``--seeds``, ``fit_scst`` in this process
with ``params.yaml``'s ``finetune_captioner.train`` (reward, baseline and seed
replaced), then the kept model's test captions with the stage's beam search:
names-all-objects, relation F1, exact-scene accuracy, CIDEr-D and BLEU-4, as
mean ± std over the seeds, beside the cross-entropy model's (one model: the
seeds vary the fine-tuning's samples, not the model it starts from).

(g) ``quality``: one setting end to end, for comparisons of the encoder or the
data size that need their own features: ``params.yaml`` with the ``-S
dotted.key=value`` overrides (YAML values) is written to ``--work``, then the
``prepare`` and ``features`` stages' own commands fill ``--work`` (skipped when
their folder is there: reuse a ``--work`` only with the same prepare and
features params), ``fit_captioner`` trains in this process (early stopping
off) and the best model's test captions (beam 3) are scored; with
``--scst-epochs N``, ``fit_scst`` (``finetune_captioner.train``, N epochs)
from that model, scored the same way. One JSON line per model, also appended
to ``<work>/quality.jsonl``; the trained model folder is kept in ``--work``.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from typing import Any
from pathlib import Path

import numpy as np
import torch


def _tiny_caption_data(num_images: int, *, positions: int = 16, channels: int = 512, seed: int = 0):
    """Synthetic features (``positions`` x ``channels``) + captions in memory: the loop's cost, not the features'."""
    from components.captioning.data import CaptionData, SplitCaptions
    from components.data.scene_language import reference_captions
    from components.data.synthetic import sample_scene
    from components.data.text import Vocab, tokenize
    from components.features.store import FeatureSet

    rng = np.random.default_rng(seed)
    captions = [reference_captions(sample_scene(rng), rng) for _ in range(num_images)]
    words = [tokenize(c) for caps in captions for c in caps]
    vocab = Vocab.build(words, min_word_count=1, max_caption_length=20)
    grid = rng.normal(size=(num_images, positions, channels)).astype(np.float16)
    features = FeatureSet(np.arange(1, num_images + 1), grid, grid.mean(1), {})
    splits = {}
    bounds = {"train": (0, int(num_images * 0.8)), "val": (int(num_images * 0.8), num_images)}
    for name, (lo, hi) in bounds.items():
        rows = np.arange(lo, hi)
        tok = [vocab.encode(tokenize(c)) for r in rows for c in captions[r]]
        width = max(map(len, tok))
        token_ids = np.zeros((len(tok), width), np.int64)
        for i, t in enumerate(tok):
            token_ids[i, : len(t)] = t
        splits[name] = SplitCaptions(
            image_ids=rows + 1, image_rows=rows, caption_rows=np.repeat(rows, 5), token_ids=token_ids,
            references={int(r + 1): [" ".join(tokenize(c)) for c in captions[r]] for r in rows})
    return CaptionData(features=features, vocab=vocab, splits=splits)


def _steady(history: list[dict]) -> float:
    rates = [h["train_captions_per_s"] for h in history[1:]] or [history[0]["train_captions_per_s"]]
    return statistics.mean(rates)


def _ray_loop(config: dict) -> None:
    from components.captioning.fit import fit_captioner
    from components.train.session import RaySession

    data = _tiny_caption_data(config["num_images"], **config["shape"])
    fit_captioner(RaySession(), data=data, model_params=config["model"], cfg=config["train"])


def _setup(args: argparse.Namespace, precision: str):
    from components.features.backbones import get_spec
    from pipelines.config import load_params

    params = load_params(args.params)
    model_params = params.train_captioner.model  # the architecture and the optimisation the demo trains
    cfg = dataclasses.replace(params.train_captioner.train, epochs=args.epochs, early_stopping_patience=0,
                              threads_per_worker=args.threads, fail_at_epoch=-1, precision=precision)
    feats = params.features  # and the feature shape of its features stage
    shape = {"positions": feats.grid_size ** 2, "channels": get_spec(feats.backbone).stage_channels(feats.stage)}
    return model_params, cfg, shape


def _local(data, model_params, cfg) -> tuple[float, float]:
    from components.captioning.fit import fit_captioner
    from components.train.session import LocalSession

    local = LocalSession()
    t0 = time.perf_counter()
    fit_captioner(local, data=data, model_params=model_params, cfg=cfg)
    return _steady(local.history), time.perf_counter() - t0


def bench_train(args: argparse.Namespace) -> None:
    from components.ray_adapter import init_ray
    from components.train.config import ScalingParams
    from components.train.precision import resolve
    from components.train.ray_trainer import fit, make_trainer

    if args.precision:
        return bench_precision(args)
    model_params, cfg, shape = _setup(args, "auto")
    data = _tiny_caption_data(args.num_images, **shape)
    init_ray(num_cpus=max(args.threads, 1))
    ratios = []
    for r in range(args.rounds):
        local_rate, local_total = _local(data, model_params, cfg)
        torch.set_num_threads(args.threads)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as storage:
            trainer = make_trainer(_ray_loop, {"num_images": args.num_images, "shape": shape, "model": model_params,
                                               "train": cfg},
                                   scaling=ScalingParams(num_workers=1, use_gpu=False, max_failures=0),
                                   cpus_per_worker=args.threads, run_name=f"bench-captioner-{r}", storage_path=storage)
            history = fit(trainer)["history"]
        ray_total = time.perf_counter() - t0
        ray_rate = _steady(history)
        ratios.append(ray_rate / local_rate)
        train_time_ray = sum(h["epoch_seconds"] for h in history)
        if r == 0:
            print(f"captions/epoch: {len(data.splits['train'].token_ids)}, epochs: {args.epochs}, threads: "
                  f"{args.threads}, features {shape['positions']} x {shape['channels']}, batch {cfg.batch_size}, "
                  f"precision auto ({resolve('auto', 'cpu')})")
        print(f"round {r + 1}/{args.rounds}: without Ray (LocalSession) {local_rate:8.1f} captions/s (total "
              f"{local_total:.1f} s); Ray Train, 1 worker {ray_rate:8.1f} captions/s (total {ray_total:.1f} s, "
              f"start-up {ray_total - train_time_ray:.1f} s)")
    print(f"ratio Ray / no Ray (steady state): {statistics.median(ratios):.3f} (median of {args.rounds}: "
          f"{', '.join(f'{x:.3f}' for x in ratios)}; target >= 0.90)")


def bench_precision(args: argparse.Namespace) -> None:
    """The same loop in this process at precision fp32 and auto, alternated over the rounds."""
    from components.train.precision import resolve

    model_params, cfg32, shape = _setup(args, "fp32")
    cfg_auto = dataclasses.replace(cfg32, precision="auto")
    data = _tiny_caption_data(args.num_images, **shape)
    print(f"captions/epoch: {len(data.splits['train'].token_ids)}, epochs: {args.epochs} (the first is warm-up), "
          f"threads: {args.threads}, features {shape['positions']} x {shape['channels']}, batch {cfg32.batch_size}; "
          f"precision auto resolves to {resolve('auto', 'cpu')} here")
    ratios = []
    for r in range(args.rounds):
        fp32, _ = _local(data, model_params, cfg32)
        auto, _ = _local(data, model_params, cfg_auto)
        ratios.append(auto / fp32)
        print(f"round {r + 1}/{args.rounds}: fp32 {fp32:8.1f} captions/s, auto {auto:8.1f} captions/s")
    print(f"ratio auto / fp32 (steady state): {statistics.median(ratios):.3f} (median of {args.rounds}: "
          f"{', '.join(f'{x:.3f}' for x in ratios)}; target >= 2)")


def _baseline_side(path: str, model_params, shape: dict) -> tuple[torch.nn.Module, torch.optim.Optimizer, None]:
    """The same model built by another revision's ``models.py`` (``git show REV:components/captioning/models.py
    > FILE``), float32, with the params keys that revision knows; the keys it lacks must be at their
    defaults, or the two sides would not be the same model."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("baseline_models", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    known = {f.name for f in dataclasses.fields(module.CaptionerConfig)}
    params = dataclasses.asdict(model_params)
    defaults = {"grid_stride": 1, "grid_self_attention": 0, "attention": "additive"}
    extra = {k: v for k, v in params.items() if k not in known and defaults.get(k, object()) != v}
    if extra:
        raise SystemExit(f"{path}: its CaptionerConfig lacks {sorted(extra)}, set in the params: not the same model")
    torch.manual_seed(0)
    model = module.build_model(module.CaptionerConfig(vocab_size=47, feature_dim=shape["channels"],
                                                      num_positions=shape["positions"],
                                                      **{k: v for k, v in params.items() if k in known}))
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3), None


def _model_changes(pairs: list[str], params_file: str) -> dict[str, Any]:
    """``KEY=VALUE`` pairs (YAML values, parsed as ``quality``'s ``-S``) over ``train_captioner.model``'s keys,
    checked as a config with those keys set; an unknown key, a bad value or none at all stops the benchmark,
    naming it."""
    from pipelines.seeds import SeedsError, check_params, parse_overrides

    if not pairs:
        raise SystemExit("bench.captioner step --compare model needs at least one -S KEY=VALUE")
    try:
        changes = parse_overrides(pairs)
        check_params(Path(params_file), {f"train_captioner.model.{key}": value for key, value in changes.items()})
    except SeedsError as err:
        raise SystemExit(f"bench.captioner step: {err}") from err
    return changes


def bench_step(args: argparse.Namespace) -> None:
    """One train step on random features of the params' shape, two sides alternated over rounds: float32
    against bf16 autocast (``--compare precision``), the additive against the dot-product attention score
    (``--compare attention``), or another revision's model in float32 against this code (``--compare
    baseline``); the last two at ``--precision``."""
    from components.captioning.models import CaptionerConfig, build_model
    from components.captioning.train import CaptionBatch, train_step
    from components.train.precision import autocast_dtype

    model_params, _, shape = _setup(args, "fp32")
    torch.set_num_threads(args.threads)
    b = 32
    tokens = torch.randint(4, 47, (b, args.length), generator=torch.Generator().manual_seed(0))
    if args.min_length:  # captions of min..length tokens (<start> .. <end>), padded to the longest, as in training
        lengths = torch.randint(args.min_length, args.length + 1, (b,), generator=torch.Generator().manual_seed(1))
        lengths[0] = args.length
        for row, n in enumerate(lengths.tolist()):
            tokens[row, 0], tokens[row, n - 1], tokens[row, n:] = 1, 2, 0
    batch = CaptionBatch(torch.randn(b, shape["positions"], shape["channels"]), torch.randn(b, shape["channels"]),
                         tokens)

    def side(dtype: torch.dtype | None, **changes: Any) -> tuple[torch.nn.Module, torch.optim.Optimizer, Any]:
        torch.manual_seed(0)
        params = {**dataclasses.asdict(model_params), **changes}
        model = build_model(CaptionerConfig(vocab_size=47, feature_dim=shape["channels"],
                                            num_positions=shape["positions"], **params))
        return model, torch.optim.AdamW(model.parameters(), lr=1e-3), dtype

    if args.compare == "attention":
        dtype = autocast_dtype(args.precision, torch.device("cpu"))
        sides = {"additive": side(dtype, attention="additive"), "dot": side(dtype, attention="dot")}
    elif args.compare == "model":
        changes = _model_changes(args.set, args.params)
        dtype = autocast_dtype(args.precision, torch.device("cpu"))
        sides = {"params": side(dtype), ", ".join(f"{k}={v}" for k, v in changes.items()): side(dtype, **changes)}
    elif args.compare == "baseline":
        if not args.baseline_models:
            raise SystemExit("bench.captioner step --compare baseline needs --baseline-models FILE")
        sides = {"baseline fp32": _baseline_side(args.baseline_models, model_params, shape),
                 f"this code {model_params.attention}, {args.precision}": side(
                     autocast_dtype(args.precision, torch.device("cpu")))}
    else:
        model = side(None)
        sides = {"fp32": model, "bf16": (model[0], model[1], torch.bfloat16)}
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.rounds):
        for name, (model, optimizer, dtype) in sides.items():
            for _ in range(3):
                train_step(model, batch, optimizer, grad_clip=5.0, autocast_dtype=dtype)  # warm-up
            t0 = time.perf_counter()
            for _ in range(args.steps):
                train_step(model, batch, optimizer, grad_clip=5.0, autocast_dtype=dtype)
            times[name].append((time.perf_counter() - t0) / args.steps)
    width = f"{args.min_length} to {args.length}" if args.min_length else f"{args.length}"
    print(f"train_step, batch {b} x {width} tokens, features {shape['positions']} x {shape['channels']}, "
          f"{args.threads} threads, {args.steps} steps x {args.rounds} rounds (median)")
    for name, values in times.items():
        ms = statistics.median(values)
        print(f"  {name}: {ms * 1000:7.1f} ms/step  {b / ms:7.1f} captions/s  (rounds: "
              f"{', '.join(f'{v * 1000:.1f}' for v in values)} ms)")
    slow, fast = times
    print(f"  ratio {fast} / {slow} (captions/s): {statistics.median(times[slow]) / statistics.median(times[fast]):.3f}")
    if args.compare == "precision" and autocast_dtype("auto", torch.device("cpu")) is None:
        print("  (this CPU has no AMX / AVX-512 BF16: precision auto trains in float32 here; bf16 has no hardware support)")


def bench_beam(args: argparse.Namespace) -> None:
    from components.captioning.decoding import beam_search, beam_search_single
    from components.captioning.models import CaptionerConfig, build_model
    from components.train.precision import autocast_dtype, resolve
    from components.train.session import autocast

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    cfg = CaptionerConfig(architecture="show_attend_tell", cell="lstm", vocab_size=60, feature_dim=512,
                             num_positions=16, embed_dim=128, hidden_dim=256, num_layers=1, dropout=0.0,
                             attention_dim=128, grid_layers=0, position_embedding=False)
    model = build_model(cfg).eval()
    grid = torch.randn(args.num_images, 16, 512)
    pooled = grid.mean(1)
    kwargs = dict(beam_size=args.beam_size, max_length=21)
    cpu = torch.device("cpu")

    def batched(n: int) -> list[list[int]]:
        g, p, size = grid[:n], pooled[:n], args.batch_size
        return [caption for s in range(0, n, size)
                for caption in beam_search(model, g[s : s + size], p[s : s + size], **kwargs).to_lists()]

    def single(n: int) -> list[list[int]]:
        return beam_search_single(model, grid[:n], pooled[:n], **kwargs).to_lists()

    print(f"{args.num_images} images, beam {args.beam_size}, batch {args.batch_size}, threads {args.threads}, "
          f"precision {args.precision} ({resolve(args.precision, cpu)})")
    ratios, differ = [], 0
    with torch.inference_mode(), autocast(cpu, autocast_dtype(args.precision, cpu)):
        batched(min(args.batch_size, args.num_images))  # warm-up, untimed
        single(2)
        for r in range(args.rounds):
            t0 = time.perf_counter()
            fast = batched(args.num_images)
            t_batched = time.perf_counter() - t0
            t0 = time.perf_counter()
            slow = single(args.num_images)
            t_single = time.perf_counter() - t0
            differ = max(differ, sum(a != b for a, b in zip(fast, slow)))
            ratios.append(t_single / t_batched)
            print(f"round {r + 1}/{args.rounds}: batched beam search {t_batched:5.2f} s "
                  f"({args.num_images / t_batched:6.1f} images/s), one image at a time {t_single:6.2f} s "
                  f"({args.num_images / t_single:5.1f} images/s): {ratios[-1]:.1f}x")
    print(f"speed-up: {statistics.median(ratios):.1f}x (median of {args.rounds}: "
          f"{', '.join(f'{x:.1f}' for x in ratios)}; target >= 20x); captions that differ: {differ}")


def bench_scst(args: argparse.Namespace) -> None:
    import copy

    from components.captioning.data import load_caption_data
    from components.captioning.finetune import build_reward, reward_data, scst_step
    from components.captioning.fit import image_features
    from components.captioning.io import load_model_dir
    from components.captioning.train import CaptionDataset, collate_captions, train_step
    from components.data.folders import PreparedDir
    from components.data.synthetic import read_scenes
    from components.train.precision import autocast_dtype
    from pipelines.config import load_params

    missing = [p for p in (args.model, args.prepared, args.features) if not Path(p).exists()]
    if missing:
        raise SystemExit(f"bench.captioner scst: {', '.join(missing)} not found: run `dvc repro train_captioner` "
                         "first (or name them with --model, --prepared, --features)")
    torch.set_num_threads(args.threads)
    cfg = load_params(args.params).finetune_captioner.train
    data = load_caption_data(args.features, args.prepared)
    scenes_file = PreparedDir(args.prepared).scenes
    scenes = read_scenes(scenes_file) if scenes_file.exists() else None
    split = data.splits["train"]
    reward = build_reward(cfg, reward_data(split, scenes))
    amp = autocast_dtype(cfg.precision, "cpu")
    base = load_model_dir(args.model).model
    max_length = cfg.max_length or data.vocab.max_caption_length + 1
    rng = np.random.default_rng(0)
    images = rng.permutation(len(split.image_ids))[: cfg.batch_size * args.steps]
    captions = CaptionDataset(data.features.grid, data.features.pooled, split.caption_rows, split.token_ids)
    chosen = set(split.image_rows[images].tolist())
    caption_idx = [i for i, row in enumerate(split.caption_rows.tolist()) if row in chosen][: 32 * args.steps]

    def scst_side() -> float:
        from components.captioning.finetune import SamplingPolicy

        policy = SamplingPolicy(copy.deepcopy(base)).eval()
        optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
        generator = torch.Generator().manual_seed(0)
        t0, n = time.perf_counter(), 0
        for start in range(0, len(images), cfg.batch_size):
            rows = images[start : start + cfg.batch_size]
            grid, pooled = image_features(data, split.image_rows[rows])
            scst_step(policy, grid, pooled, split.image_ids[rows], data=data, reward=reward, cfg=cfg,
                      optimizer=optimizer, max_length=max_length, generator=generator, amp=amp)
            n += len(rows) * cfg.samples_per_image
        return n / (time.perf_counter() - t0)

    def ce_side() -> float:
        model = copy.deepcopy(base)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        t0, n = time.perf_counter(), 0
        for start in range(0, len(caption_idx), 32):
            batch = collate_captions(captions.__getitems__(caption_idx[start : start + 32]))
            train_step(model, batch, optimizer, grad_clip=5.0, autocast_dtype=amp)
            n += batch.tokens.shape[0]
        return n / (time.perf_counter() - t0)

    print(f"model {args.model}, {args.steps} steps a side: SCST {cfg.batch_size} images x {cfg.samples_per_image} "
          f"samples (reward {cfg.reward}, baseline {cfg.baseline}), cross-entropy 32 captions; precision "
          f"{cfg.precision} ({'bf16' if amp is not None else 'fp32'}), {args.threads} threads")
    ratios = []
    for r in range(args.rounds):
        sampled, ce = scst_side(), ce_side()
        ratios.append(sampled / ce)
        print(f"round {r + 1}/{args.rounds}: SCST {sampled:7.1f} sampled captions/s, cross-entropy {ce:7.1f} "
              f"captions/s: {ratios[-1]:.2f}")
    print(f"ratio SCST sampled / cross-entropy captions/s: {statistics.median(ratios):.2f} (median of {args.rounds}: "
          f"{', '.join(f'{x:.2f}' for x in ratios)})")


def bench_rewards(args: argparse.Namespace) -> None:
    from components.captioning.data import load_caption_data
    from components.captioning.finetune import fit_scst
    from components.captioning.io import load_model_dir
    from components.data.folders import PreparedDir
    from components.data.synthetic import read_scenes
    from components.train.session import LocalSession
    from pipelines.config import load_params

    params = load_params(args.params).finetune_captioner
    data = load_caption_data(args.features, args.prepared)
    scenes = read_scenes(PreparedDir(args.prepared).scenes)
    test = data.splits["test"]

    def scores(model) -> dict[str, float]:
        return _test_scores(model, data, scenes, beam_size=params.decode.beam_size,
                            length_penalty=params.decode.length_penalty)

    def row(name: str, runs: list[dict[str, float]], seconds: float) -> str:
        cells = []
        for k in TEST_KEYS:
            values = [r[k] for r in runs]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.4f} ± {std:.4f}")
        return f"| {name} | " + " | ".join(cells) + f" | {seconds:.0f} |"

    print(f"test split: {len(test.image_ids)} images; seeds {args.seeds}; finetune_captioner.train otherwise as in "
          f"{args.params} (epochs {params.train.epochs}, lr {params.train.lr}, K {params.train.samples_per_image})")
    header = "| setting | names all objects | relation F1 | exact scene | CIDEr-D | BLEU-4 | s per run |"
    lines = [header, "|" + "---|" * 7, row("cross-entropy model", [scores(load_model_dir(args.model).model)], 0)]
    print(lines[-1], flush=True)
    for setting in args.settings:
        reward, _, baseline = setting.partition(":")
        runs, seconds = [], []
        for seed in args.seeds:
            cfg = dataclasses.replace(params.train, reward=reward, baseline=baseline or params.train.baseline,
                                      seed=seed, threads_per_worker=args.threads)
            t0 = time.perf_counter()
            state = fit_scst(LocalSession(), data=data, captioner_dir=args.model, cfg=cfg, scenes=scenes)
            seconds.append(time.perf_counter() - t0)
            runs.append(scores(_best_model(state)[0]))
            print(f"  {setting} seed {seed}: " + ", ".join(f"{k} {v:.4f}" for k, v in runs[-1].items())
                  + f" (best epoch {state['best_epoch']}, {seconds[-1]:.0f} s)", flush=True)
        lines.append(row(f"{reward}, baseline {baseline or params.train.baseline}", runs, statistics.mean(seconds)))
        print(lines[-1], flush=True)
    print("\n".join(lines))


TEST_KEYS = ("names_all_objects", "relation_f1", "exact_scene_accuracy", "cider", "bleu_4")


def _test_scores(model: torch.nn.Module, data, scenes, *, beam_size: int, length_penalty: float) -> dict[str, float]:
    """``TEST_KEYS`` of ``model``'s beam-search captions of the test split (quick scorer and scene scores)."""
    from components.captioning.fit import decode_split
    from components.metrics.captions import quick_scores
    from components.metrics.semantic import scene_accuracy

    test = data.splits["test"]
    captions, _ = decode_split(model.eval(), data, test, beam_size=beam_size, length_penalty=length_penalty)
    found = {**quick_scores(captions, test.references), **scene_accuracy(captions, scenes)}
    return {k: found[k] for k in TEST_KEYS}


def _best_model(state: dict):
    """The model of a fit's final state (``model_config``, ``best_model``) and its config."""
    from components.captioning.models import CaptionerConfig, build_model

    cfg = CaptionerConfig.from_dict(state["model_config"])
    model = build_model(cfg)
    model.load_state_dict(state["best_model"])
    return model, cfg


def bench_quality(args: argparse.Namespace) -> None:
    import json
    import subprocess
    import sys

    from ruamel.yaml import YAML

    from components.captioning.data import load_caption_data
    from components.captioning.finetune import fit_scst
    from components.captioning.fit import fit_captioner
    from components.captioning.io import save_model_dir
    from components.data.folders import PreparedDir
    from components.data.synthetic import read_scenes
    from components.train.session import LocalSession
    from pipelines.config import load_params
    from pipelines.seeds import SeedsError, check_params, parse_overrides

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    try:  # an unknown key or a wrong type stops here, naming it
        raw = check_params(Path(args.params), parse_overrides(args.set))
    except SeedsError as err:
        raise SystemExit(f"bench.captioner quality: {err}") from err
    params_file = work / f"params-{args.tag}.yaml"
    with open(params_file, "w") as f:
        YAML().dump(raw, f)
    params = load_params(str(params_file))
    prepared, features = work / "prepared", work / "features"
    for folder, cmd in ((prepared, ["pipelines.prepare", "--out", str(prepared), "--report", str(work / "prepare.json")]),
                        (features, ["pipelines.features", "--prepared", str(prepared), "--out", str(features)])):
        if not folder.exists():
            subprocess.run([sys.executable, "-m", cmd[0], "--params", str(params_file), *cmd[1:]], check=True)
    data = load_caption_data(str(features), str(prepared))
    scenes = read_scenes(PreparedDir(str(prepared)).scenes)
    common = {"tag": args.tag, "set": args.set, "test_images": len(data.splits["test"].image_ids)}

    def report(model: torch.nn.Module, row: dict) -> None:
        scores = _test_scores(model, data, scenes, beam_size=3, length_penalty=0.0)
        line = json.dumps({**common, **row, **{k: round(v, 4) for k, v in scores.items()}})
        print(line, flush=True)
        with open(work / "quality.jsonl", "a") as f:
            f.write(line + "\n")

    cfg = dataclasses.replace(params.train_captioner.train, early_stopping_patience=0, threads_per_worker=args.threads)
    t0 = time.perf_counter()
    session = LocalSession()
    state = fit_captioner(session, data=data, model_params=params.train_captioner.model, cfg=cfg)
    seconds = time.perf_counter() - t0
    model, model_cfg = _best_model(state)
    model_dir = save_model_dir(work / f"captioner-{args.tag}", model, model_cfg, data.vocab)
    report(model, {"model": "cross-entropy", "train_seconds": round(seconds), "best_epoch": state["best_epoch"],
                   "val_cider": [round(h["val_cider"], 3) for h in session.history]})
    if args.scst_epochs:
        scst_cfg = dataclasses.replace(params.finetune_captioner.train, epochs=args.scst_epochs,
                                       threads_per_worker=args.threads)
        t0 = time.perf_counter()
        scst = fit_scst(LocalSession(), data=data, captioner_dir=str(model_dir), cfg=scst_cfg, scenes=scenes)
        report(_best_model(scst)[0], {"model": f"scst, {args.scst_epochs} epochs",
                                      "train_seconds": round(time.perf_counter() - t0),
                                      "best_epoch": scst["best_epoch"]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="which", required=True)
    train = sub.add_parser("train", help="(a) Ray Train vs the same loop without Ray")
    train.add_argument("--params", default="params.yaml",
                       help="the train_captioner model and train params, and the features shape, to time")
    train.add_argument("--num-images", type=int, default=1000)
    train.add_argument("--epochs", type=int, default=4)
    train.add_argument("--threads", type=int, default=2)
    train.add_argument("--rounds", type=int, default=3, help="alternate the two sides this many times; the median")
    train.add_argument("--precision", action="store_true",
                       help="compare precision fp32 with auto (bf16 on CPUs with AMX / AVX-512 BF16) instead")
    train.set_defaults(fn=bench_train)
    step = sub.add_parser("step", help="(d) one train step, float32 vs bf16 autocast")
    step.add_argument("--params", default="params.yaml")
    step.add_argument("--length", type=int, default=14, help="tokens per caption (the demo's: 6 to 19)")
    step.add_argument("--min-length", type=int, default=0,
                      help="captions of uniformly --min-length to --length tokens, padded to --length, one of "
                           "them that long (the demo's: --min-length 6 --length 19); 0: all --length")
    step.add_argument("--steps", type=int, default=30)
    step.add_argument("--rounds", type=int, default=3)
    step.add_argument("--threads", type=int, default=2)
    step.add_argument("--epochs", type=int, default=1, help=argparse.SUPPRESS)
    step.add_argument("--compare", choices=("precision", "attention", "model", "baseline"), default="precision",
                      help="precision: fp32 vs bf16 autocast; attention: additive vs dot score, both at "
                           "--precision; model: the params' model vs the same with -S changes, both at "
                           "--precision; baseline: --baseline-models (fp32) vs this code at --precision")
    step.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                      help="--compare model: a train_captioner.model key of the other side (YAML value); repeatable")
    step.add_argument("--baseline-models", default="",
                      help="another revision's components/captioning/models.py (git show REV:PATH > FILE)")
    step.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                      help="--compare attention's and model's sides and this code's side of --compare baseline (auto: bf16 "
                           "autocast on a CPU with AMX / AVX-512 BF16, else float32)")
    step.set_defaults(fn=bench_step)
    beam = sub.add_parser("beam", help="(b) batched beam search vs one image at a time")
    beam.add_argument("--num-images", type=int, default=500)
    beam.add_argument("--beam-size", type=int, default=3)
    beam.add_argument("--batch-size", type=int, default=500,
                      help="images per beam_search call (500: all in one, ~10%% faster than 250 here)")
    beam.add_argument("--threads", type=int, default=2)
    beam.add_argument("--rounds", type=int, default=3, help="alternate the two sides this many times; the median")
    beam.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                      help="both sides: auto = bf16 autocast on CPUs with AMX / AVX-512 BF16, else float32")
    beam.set_defaults(fn=bench_beam)
    scst = sub.add_parser("scst", help="(e) SCST sampled captions/s vs cross-entropy captions/s, same model")
    scst.add_argument("--params", default="params.yaml", help="finetune_captioner.train: batch, K, reward, precision")
    scst.add_argument("--model", default="models/captioner")
    scst.add_argument("--prepared", default="data/prepared")
    scst.add_argument("--features", default="data/features")
    scst.add_argument("--steps", type=int, default=20, help="steps a side per round")
    scst.add_argument("--rounds", type=int, default=3)
    scst.add_argument("--threads", type=int, default=2)
    scst.set_defaults(fn=bench_scst)
    rewards = sub.add_parser("rewards", help="(f) SCST rewards and baselines over seeds: test scores, mean ± std")
    rewards.add_argument("--params", default="params.yaml")
    rewards.add_argument("--model", default="models/captioner")
    rewards.add_argument("--prepared", default="data/prepared")
    rewards.add_argument("--features", default="data/features")
    rewards.add_argument("--settings", nargs="+", default=["cider_d:mean", "scene:mean", "mix:mean", "mix:greedy"],
                         help="reward:baseline pairs")
    rewards.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    rewards.add_argument("--threads", type=int, default=2)
    rewards.set_defaults(fn=bench_rewards)
    quality = sub.add_parser("quality", help="(g) test scores of one setting from scratch (its own data and features)")
    quality.add_argument("--params", default="params.yaml")
    quality.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                         help="override a params key (dotted, YAML value); repeatable")
    quality.add_argument("--work", required=True, help="folder for the params, data, features and models")
    quality.add_argument("--tag", default="run", help="names the params file and the model folder in --work")
    quality.add_argument("--scst-epochs", type=int, default=0, help="then SCST for this many epochs (0: none)")
    quality.add_argument("--threads", type=int, default=2)
    quality.set_defaults(fn=bench_quality)
    args = parser.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
