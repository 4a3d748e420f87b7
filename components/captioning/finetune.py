"""Self-critical sequence training (SCST): the cross-entropy captioner fine-tuned on a sequence-level reward.

:func:`fit_scst` runs under Ray Train (:func:`train_loop_per_worker`) or in
this process, like every loop, through a :class:`~components.train.session.Session`.
Per step, for a batch of training images (this rank's shard):

1. ``K`` captions per image are sampled from the model (multinomial at
   ``temperature``; :func:`~components.captioning.decoding.sample_captions`),
   with the log-probability of every sampled token, in one pass with gradients;
2. each sample gets its reward (:mod:`components.captioning.rewards`: CIDEr-D
   against the image's references, the scene F1, or a mix), without gradients;
3. the baseline, without gradients either: the reward of the image's greedy
   caption (Rennie et al. 2017) or the mean reward of its other ``K - 1``
   samples (Luo 2020) (:mod:`components.captioning.scst`);
4. the loss ``-mean (r - b) * sum_t log p(w_t)``, less ``entropy_weight`` times
   the mean entropy of the sampling distributions, one optimiser step.

The model runs with dropout off throughout (``eval`` mode): the distribution
the captions are sampled from is exactly the one whose gradient is taken, and
the greedy baseline decodes the same network.

Each epoch ends with the greedy captions of the whole validation split: their
mean reward (with document frequencies from the validation references),
CIDEr-D, BLEU-4 and, on synthetic data, the scene scores. The model kept is the
one of the best validation reward, the cross-entropy model (epoch -1) included:
fine-tuning never hands back a model worse on its own objective than the one it
started from. Resuming, reseeding per epoch and exactly-once reporting are the
other loops' (:mod:`components.captioning.fit`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from components.captioning import rewards, scst
from components.captioning.config import SCSTTrainParams
from components.captioning.data import CaptionData, SplitCaptions, load_caption_data
from components.captioning.decoding import SampleResult, greedy_decode, sample_captions
from components.captioning.fit import decode_split, image_features
from components.captioning.io import load_model_dir
from components.captioning.models import CaptionModel
from components.data.folders import PreparedDir
from components.data.synthetic import read_scenes
from components.metrics.captions import quick_scores
from components.metrics.semantic import scene_accuracy
from components.train.guard import guard
from components.train.precision import autocast_dtype
from components.train.session import (
    RaySession,
    Session,
    autocast,
    derive_seed,
    maybe_inject_failure,
    unwrap,
)


class SamplingPolicy(nn.Module):
    """The caption model as a policy: ``forward`` samples ``K`` captions per image with their log-probabilities.

    A module of its own so that DDP wraps the sampling pass: the gradients of
    ``token_log_probs`` are averaged over the ranks like any forward's.
    """

    def __init__(self, model: CaptionModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, grid: Tensor | None, pooled: Tensor, *, samples_per_image: int, max_length: int,
                generator: torch.Generator | None, temperature: float) -> SampleResult:
        return sample_captions(self.model, grid, pooled, samples_per_image=samples_per_image,
                               max_length=max_length, generator=generator, temperature=temperature)


def reward_data(split: SplitCaptions, scenes: Any) -> rewards.RewardData:
    """A split's references as word lists (and the scenes, on synthetic data): what rewards are built from."""
    return rewards.RewardData(references={i: [c.split() for c in refs] for i, refs in split.references.items()},
                              scenes=scenes)


def build_reward(cfg: SCSTTrainParams, data: rewards.RewardData) -> rewards.Reward:
    """The reward ``cfg.reward`` over ``data`` (``mix`` gets its weight and CIDEr scale)."""
    options = {"weight": cfg.mix_weight, "cider_scale": cfg.cider_scale} if cfg.reward == "mix" else {}
    return rewards.build(cfg.reward, data, **options)


def _words(data: CaptionData, token_lists: list[list[int]]) -> list[list[str]]:
    return [data.vocab.decode(tokens).split() for tokens in token_lists]


class _Indices(torch.utils.data.Dataset):
    """``0..n-1``: what the DistributedSampler shards (the split's images)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        return index


def _epoch_order(n: int, *, seed: int, epoch: int, sampler: Any) -> np.ndarray:
    """This rank's images of the epoch, shuffled from ``(seed, epoch)`` alone."""
    if sampler is not None:
        sampler.set_epoch(epoch)
        return np.fromiter(iter(sampler), dtype=np.int64)
    return np.random.default_rng([seed, epoch]).permutation(n)


@torch.no_grad()
def validate(model: CaptionModel, data: CaptionData, reward: rewards.Reward, reward_name: str, *,
             scenes: Any, device: torch.device) -> dict[str, float]:
    """Greedy captions of the validation split: mean reward, BLEU-4, CIDEr-D and, with scenes, the scene scores."""
    split = data.splits["val"]
    predictions, _ = decode_split(model, data, split, device=device)
    ids = sorted(predictions)
    values = rewards.score(reward_name, reward, [predictions[i].split() for i in ids], ids)
    quick = quick_scores(predictions, split.references)
    out = {"val_reward": float(values.mean()), "val_bleu_4": quick["bleu_4"], "val_cider": quick["cider"]}
    if scenes is not None:
        semantic = scene_accuracy(predictions, scenes)
        out |= {"val_names_all_objects": semantic["names_all_objects"], "val_relation_f1": semantic["relation_f1"]}
    return out


def scst_step(policy: nn.Module, grid: Tensor, pooled: Tensor, image_ids: np.ndarray, *, data: CaptionData,
              reward: rewards.Reward, cfg: SCSTTrainParams, optimizer: torch.optim.Optimizer, max_length: int,
              generator: torch.Generator, amp: torch.dtype | None) -> dict[str, float]:
    """One SCST step on one batch of images (module doc, steps 1-4); returns its figures."""
    model = unwrap(policy).model
    k = cfg.samples_per_image
    optimizer.zero_grad(set_to_none=True)
    with autocast(grid.device, amp):
        sampled = policy(grid, pooled, samples_per_image=k, max_length=max_length, generator=generator,
                         temperature=cfg.temperature)
    sample_ids = np.repeat(image_ids, k)
    values = rewards.score(cfg.reward, reward, _words(data, sampled.to_lists()), sample_ids.tolist())
    values = values.reshape(len(image_ids), k)  # (B, K)
    greedy = None
    if cfg.baseline == "greedy":
        with autocast(grid.device, amp):
            decoded = greedy_decode(model, grid, pooled, max_length=max_length)
        greedy = rewards.score(cfg.reward, reward, _words(data, decoded.to_lists()), image_ids.tolist())
    advantage = scst.advantages(values, baseline=cfg.baseline, greedy=greedy)  # (B, K)
    adv = torch.from_numpy(advantage.reshape(-1)).to(grid.device)
    loss = scst.policy_loss(sampled.token_log_probs, sampled.mask, adv)
    entropy = scst.entropy_bonus(sampled.logits, sampled.mask)
    if cfg.entropy_weight:
        loss = loss - cfg.entropy_weight * entropy
    loss.backward()
    grad_norm = nn.utils.clip_grad_norm_(policy.parameters(), cfg.grad_clip if cfg.grad_clip else math.inf)
    optimizer.step()
    return {"loss": float(loss.detach()), "reward": float(values.mean()),
            "baseline": float((values - advantage).mean()), "advantage_std": float(advantage.std()),
            "entropy": float(entropy.detach()), "sample_length": float(sampled.lengths.float().mean()),
            "unfinished": float((~sampled.finished).float().mean()), "grad_norm": float(grad_norm)}


def fit_scst(
    session: Session,
    *,
    data: CaptionData,
    captioner_dir: str,
    cfg: SCSTTrainParams,
    scenes: Mapping[int, Any] | None = None,
    storage_dir: str = "",
    on_step: Callable[[nn.Module, int, int], None] | None = None,
) -> dict[str, Any]:
    """Fine-tune the captioner in ``captioner_dir`` by SCST; return the final state (as in the last checkpoint).

    Args:
        session: Where it runs (Ray Train worker or this process).
        data: Features, vocab and captions per split (train and val needed); the vocabulary must be the model's.
        captioner_dir: The cross-entropy model folder (``train_captioner``'s).
        cfg: The ``finetune_captioner.train`` params.
        scenes: image id -> its true objects (synthetic data: the ``scene`` reward and scores), or None.
        storage_dir: The run's storage folder (failure-injection flags).
        on_step: Test hook called after every step with ``(policy, epoch, step in the epoch)``.

    Returns:
        ``model_config``, ``best_model`` (state dict of the best validation reward), ``best_epoch``
        (-1: the cross-entropy model was not beaten), ``start`` (the cross-entropy model's validation
        figures), ``history`` and the training state.
    """
    torch.set_num_threads(max(cfg.threads_per_worker, 1))
    torch.manual_seed(cfg.seed)
    device = session.device
    loaded = load_model_dir(captioner_dir)
    if loaded.vocab.to_json() != data.vocab.to_json():
        raise ValueError(f"{captioner_dir}: the model's vocabulary is not the prepared data's (train_captioner "
                         "ran on other data: rerun it)")
    model = loaded.model.eval()  # dropout off for good (module doc)
    policy = session.prepare_model(SamplingPolicy(model))
    policy.eval()
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    amp = autocast_dtype(cfg.precision, device)
    max_length = cfg.max_length or data.vocab.max_caption_length + 1

    train_split = data.splits["train"]
    reward = build_reward(cfg, reward_data(train_split, scenes))
    val_reward = build_reward(cfg, reward_data(data.splits["val"], scenes))

    state: dict[str, Any] = {"epoch": -1, "history": [], "best_reward": -math.inf, "best_epoch": -1,
                             "best_model": None, "start": {}}
    restored = session.restore()
    if restored is not None:
        unwrap(policy).model.load_state_dict(restored["model"])
        optimizer.load_state_dict(restored["optimizer"])
        state = {k: restored[k] for k in state}
    else:  # the cross-entropy model is the one to beat
        state["start"] = validate(model, data, val_reward, cfg.reward, scenes=scenes, device=device)
        state["best_reward"] = state["start"]["val_reward"]
        state["best_model"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}

    sampler = session.sampler(_Indices(len(train_split.image_ids)), shuffle=True, seed=cfg.seed)
    generator = torch.Generator(device=device)
    for epoch in range(state["epoch"] + 1, cfg.epochs):
        maybe_inject_failure(cfg.fail_at_epoch, epoch, session, storage_dir)
        generator.manual_seed(derive_seed(cfg.seed, session.rank, epoch, 3))  # the samples
        order = _epoch_order(len(train_split.image_ids), seed=cfg.seed, epoch=epoch, sampler=sampler)
        start = time.perf_counter()
        sums: dict[str, float] = {}
        steps = 0
        for first in range(0, len(order), cfg.batch_size):
            chosen = order[first : first + cfg.batch_size]
            grid, pooled = image_features(data, train_split.image_rows[chosen], device)
            out = scst_step(policy, grid, pooled, train_split.image_ids[chosen], data=data, reward=reward, cfg=cfg,
                            optimizer=optimizer, max_length=max_length, generator=generator, amp=amp)
            guard({"loss": out["loss"]}, step=steps, epoch=epoch, last_good_epoch=state["epoch"])
            for key, value in out.items():
                sums[key] = sums.get(key, 0.0) + value
            if on_step is not None:
                on_step(policy, epoch, steps)
            steps += 1
        train_seconds = time.perf_counter() - start
        val = validate(model, data, val_reward, cfg.reward, scenes=scenes, device=device)
        metrics = {
            "epoch": epoch,
            **{f"train_{key}": value / max(steps, 1) for key, value in sums.items()},
            **val,
            "lr": optimizer.param_groups[0]["lr"],
            "train_samples_per_s": len(order) * cfg.samples_per_image * session.world_size / max(train_seconds, 1e-9),
            "epoch_seconds": time.perf_counter() - start,
            "bf16_autocast": float(amp is not None),
        }
        if val["val_reward"] > state["best_reward"]:
            state["best_reward"], state["best_epoch"] = val["val_reward"], epoch
            state["best_model"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        session.end_epoch(state, metrics, checkpoint=lambda: {
            **state, "model": unwrap(policy).model.state_dict(), "optimizer": optimizer.state_dict(),
            "model_config": loaded.config.to_dict()})

    return {**state, "model_config": loaded.config.to_dict()}


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """``TorchTrainer`` entry point. ``config``: paths, ``train``, ``storage_dir``, an optional ``on_step`` hook."""
    data = load_caption_data(config["features_dir"], config["prepared_dir"])
    scenes_file = PreparedDir(config["prepared_dir"]).scenes
    fit_scst(RaySession(), data=data, captioner_dir=config["captioner_dir"], cfg=config["train"],
             scenes=read_scenes(scenes_file) if scenes_file.exists() else None, storage_dir=config["storage_dir"], on_step=config.get("on_step"))


__all__ = ["SamplingPolicy", "build_reward", "fit_scst", "reward_data", "scst_step", "train_loop_per_worker",
           "validate"]
