"""Self-critical fine-tuning (components.captioning.finetune) without Ray: the sampler, the step, the loop."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from components.captioning import rewards, scst
from components.captioning.config import SCSTTrainParams
from components.captioning.decoding import sample_captions
from components.captioning.finetune import fit_scst
from components.captioning.fit import fit_captioner
from components.captioning.io import save_model_dir
from components.captioning.models import CaptionerConfig, build_model
from components.data.text import Vocab
from components.train.session import InjectedFailure, LocalSession
from tests.unit.test_captioning_fit import CFG, MODEL, tiny_data

SCST = SCSTTrainParams(epochs=3, batch_size=8, samples_per_image=4, lr=0.005, reward="cider_d", mix_weight=0.5,
                       cider_scale=6.0, baseline="mean", entropy_weight=0.0, temperature=1.0, max_length=0,
                       grad_clip=5.0, seed=0, precision="fp32", threads_per_worker=1, fail_at_epoch=-1)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def weak_captioner(tmp_path_factory):
    """A cross-entropy model of :func:`tiny_data` after 2 epochs: it has a lot left to learn."""
    data = tiny_data()
    state = fit_captioner(LocalSession(), data=data, model_params=MODEL, cfg=dataclasses.replace(CFG, epochs=2))
    cfg = CaptionerConfig.from_dict(state["model_config"])
    model = build_model(cfg)
    model.load_state_dict(state["best_model"])
    return save_model_dir(tmp_path_factory.mktemp("captioner"), model, cfg, data.vocab)


def _model(seed: int = 0):
    torch.manual_seed(seed)
    cfg = CaptionerConfig(vocab_size=9, feature_dim=8, num_positions=4, architecture="show_attend_tell", cell="lstm",
                          embed_dim=8, hidden_dim=16, num_layers=1, dropout=0.0, attention_dim=8, grid_layers=0,
                          position_embedding=False)
    return build_model(cfg).eval()


def test_sampled_log_probs_are_the_models_log_probs_of_the_sampled_tokens():
    model = _model()
    grid = torch.randn(3, 4, 8)
    out = sample_captions(model, grid, grid.mean(1), samples_per_image=4, max_length=6,
                          generator=torch.Generator().manual_seed(0))
    assert out.tokens.shape[0] == 12 and out.token_log_probs.requires_grad
    # teacher-forced pass over <start> + the samples, image b's features for its 4 samples
    inputs = torch.cat([torch.full((12, 1), Vocab.start_id), out.tokens], 1)
    logits = model(grid.repeat_interleave(4, 0), grid.mean(1).repeat_interleave(4, 0), inputs).logits
    banned = torch.tensor([Vocab.pad_id, Vocab.start_id])
    expected = logits.index_fill(2, banned, -torch.inf).log_softmax(-1).gather(2, out.tokens[..., None]).squeeze(-1)
    expected = torch.where(out.mask.bool(), expected, 0.0)  # nothing after a sample's end (there: pad, banned)
    torch.testing.assert_close(out.token_log_probs, expected, atol=1e-5, rtol=1e-5)
    # the mask covers each sample up to its <end>; nothing banned is drawn; padding after the end
    for row, length, finished, mask in zip(out.tokens.tolist(), out.lengths.tolist(), out.finished.tolist(),
                                           out.mask.tolist()):
        assert mask == [1.0] * length + [0.0] * (len(row) - length)
        assert finished == (Vocab.end_id in row[:length]) and (not finished or row[length - 1] == Vocab.end_id)
        assert Vocab.start_id not in row and all(t == Vocab.pad_id for t in row[length:])
        assert Vocab.pad_id not in row[:length]


def test_sampling_is_seeded_and_a_sample_that_never_ends_is_cut_at_max_length():
    model = _model(1)
    grid = torch.randn(4, 4, 8)

    def draw(seed, max_length=8):
        return sample_captions(model, grid, grid.mean(1), samples_per_image=3, max_length=max_length,
                               generator=torch.Generator().manual_seed(seed))

    assert torch.equal(draw(0).tokens, draw(0).tokens) and not torch.equal(draw(0).tokens, draw(1).tokens)
    cut = draw(0, max_length=2)
    assert cut.tokens.shape[1] <= 2 and (cut.lengths[~cut.finished] == 2).all()
    assert (cut.lengths <= 2).all()
    with pytest.raises(ValueError, match="temperature"):
        sample_captions(model, grid, grid.mean(1), samples_per_image=1, max_length=2, temperature=0.0)


def test_the_loss_takes_no_gradient_through_the_baseline_and_ignores_banned_ids_in_the_entropy():
    logits = torch.randn(2, 3, 5, requires_grad=True)
    logp = logits.log_softmax(-1)[..., 0]
    advantage = torch.tensor([0.5, -0.5], requires_grad=True)  # as if computed from a baseline with gradients
    scst.policy_loss(logp, torch.ones(2, 3), advantage).backward()
    assert advantage.grad is None and logits.grad is not None
    banned = logits.detach().clone().requires_grad_()
    with_ban = banned.index_fill(2, torch.tensor([0, 1]), -torch.inf)
    entropy = scst.entropy_bonus(with_ban, torch.ones(2, 3))
    entropy.backward()
    assert torch.isfinite(entropy) and torch.isfinite(banned.grad).all()
    assert entropy.item() == pytest.approx(scst.entropy_bonus(banned.detach()[..., 2:], torch.ones(2, 3)).item())


@pytest.mark.parametrize("baseline", ["mean", "greedy"])
def test_fine_tuning_raises_the_validation_reward_of_a_weak_model(weak_captioner, baseline):
    data = tiny_data()
    cfg = dataclasses.replace(SCST, baseline=baseline)
    state = fit_scst(LocalSession(), data=data, captioner_dir=str(weak_captioner), cfg=cfg)
    assert [h["epoch"] for h in state["history"]] == [0, 1, 2]
    best = max(h["val_reward"] for h in state["history"])
    assert best > state["start"]["val_reward"] + 0.1, (state["start"], [h["val_reward"] for h in state["history"]])
    assert state["best_reward"] == best and state["history"][state["best_epoch"]]["val_reward"] == best
    rows = state["history"][0]
    assert {"train_reward", "train_baseline", "train_advantage_std", "train_entropy", "val_cider"} <= set(rows)


def test_the_cross_entropy_model_is_kept_when_fine_tuning_never_beats_it(weak_captioner):
    data = tiny_data()
    cfg = dataclasses.replace(SCST, epochs=1, lr=1e-9)  # no change: the validation reward stays the start's
    state = fit_scst(LocalSession(), data=data, captioner_dir=str(weak_captioner), cfg=cfg)
    assert state["best_epoch"] == -1 and state["best_reward"] == state["start"]["val_reward"]
    start = torch.load(weak_captioner / "model.pt", weights_only=True)
    assert all(torch.equal(state["best_model"][k], start[k]) for k in start)


def test_interrupted_and_resumed_fine_tuning_equals_an_uninterrupted_one(weak_captioner, tmp_path):
    data = tiny_data()
    straight = LocalSession()
    expected = fit_scst(straight, data=data, captioner_dir=str(weak_captioner), cfg=SCST)
    faulty = dataclasses.replace(SCST, fail_at_epoch=1)
    first = LocalSession()
    with pytest.raises(InjectedFailure):
        fit_scst(first, data=data, captioner_dir=str(weak_captioner), cfg=faulty, storage_dir=str(tmp_path))
    resumed = LocalSession(initial_state=first.last_state)
    state = fit_scst(resumed, data=data, captioner_dir=str(weak_captioner), cfg=faulty, storage_dir=str(tmp_path))
    assert [h["epoch"] for h in first.history] == [0] and [h["epoch"] for h in resumed.history] == [1, 2]
    for key in ("model", "best_model"):
        assert all(torch.equal(resumed.last_state[key][k], straight.last_state[key][k])
                   for k in straight.last_state[key]), key
    drop = ("train_samples_per_s", "epoch_seconds")
    assert [{k: v for k, v in h.items() if k not in drop} for h in state["history"]] == \
        [{k: v for k, v in h.items() if k not in drop} for h in expected["history"]]


def test_a_non_finite_reward_stops_with_one_line_naming_it(weak_captioner, monkeypatch):
    monkeypatch.setitem(rewards.REWARDS, "broken", lambda data: lambda samples, ids: np.full(len(samples), np.nan))
    # the cross-entropy model's validation captions are scored first: 24 images
    with pytest.raises(rewards.RewardError, match="reward 'broken' returned 24 non-finite values of 24 "):
        fit_scst(LocalSession(), data=tiny_data(), captioner_dir=str(weak_captioner),
                 cfg=dataclasses.replace(SCST, reward="broken"))


def test_an_unknown_reward_and_a_model_of_other_data_are_clear_errors(weak_captioner, tmp_path):
    with pytest.raises(rewards.RewardError, match="unknown reward 'bleu'; known: cider_d, mix, scene"):
        fit_scst(LocalSession(), data=tiny_data(), captioner_dir=str(weak_captioner),
                 cfg=dataclasses.replace(SCST, reward="bleu"))
    data = tiny_data()
    other = dataclasses.replace(data, vocab=Vocab(tokens=(*data.vocab.tokens[:-1], "triangle"), min_word_count=1,
                                                  max_caption_length=4))
    with pytest.raises(ValueError, match="vocabulary is not the prepared data's"):
        fit_scst(LocalSession(), data=other, captioner_dir=str(weak_captioner), cfg=SCST)
