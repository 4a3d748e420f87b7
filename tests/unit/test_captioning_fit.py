"""The caption training loop without Ray (LocalSession): learning, resume, failure injection."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from components.captioning.data import CaptionData, SplitCaptions
from components.captioning.config import CaptionerModelParams, CaptionerTrainParams
from components.captioning.fit import decode_split, fit_captioner
from components.captioning.models import CaptionerConfig, build_model
from components.config import ConfigError
from components.data.text import Vocab
from components.features.store import FeatureSet
from components.train.session import InjectedFailure, LocalSession

WORDS = ["a", "red", "blue", "circle", "square"]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_data(n_images: int = 24) -> CaptionData:
    """Image i shows colour i % 2 and shape (i // 2) % 2, encoded in its features."""
    rng = np.random.default_rng(0)
    vocab = Vocab(tokens=("<pad>", "<start>", "<end>", "<unk>", *WORDS), min_word_count=1, max_caption_length=4)
    grid = rng.normal(0, 0.1, (n_images, 4, 8)).astype(np.float16)
    captions, refs = [], {}
    for i in range(n_images):
        colour, shape = ["red", "blue"][i % 2], ["circle", "square"][(i // 2) % 2]
        grid[i, :, i % 2] += 2.0
        grid[i, :, 2 + (i // 2) % 2] += 2.0
        words = ["a", colour, shape]
        captions.append(vocab.encode(words))
        refs[i + 1] = [" ".join(words)]
    pooled = grid.mean(1)
    features = FeatureSet(np.arange(1, n_images + 1, dtype=np.int64), grid, pooled, {})
    tokens = np.asarray(captions, dtype=np.int64)
    ids = np.arange(1, n_images + 1)
    split = SplitCaptions(image_ids=ids, image_rows=ids - 1, caption_rows=ids - 1, token_ids=tokens, references=refs)
    return CaptionData(features=features, vocab=vocab, splits={"train": split, "val": split, "test": split})


MODEL = CaptionerModelParams(architecture="show_attend_tell", cell="gru", embed_dim=16, hidden_dim=32,
                          num_layers=1, dropout=0.0, attention_dim=16, grid_layers=1, position_embedding=True,
                          grid_stride=1, grid_self_attention=0, attention="additive")
CFG = CaptionerTrainParams(epochs=12, batch_size=8, lr=0.02, weight_decay=0.0, lr_schedule="constant", grad_clip=5.0,
                         label_smoothing=0.0, attention_penalty=0.0, scheduled_sampling=0.0, length_buckets=4,
                         grid_shift=0,
                         early_stopping_patience=0, seed=0, precision="fp32", threads_per_worker=1, fail_at_epoch=-1)


def test_fit_learns_and_reports_every_epoch():
    data = tiny_data()
    session = LocalSession()
    state = fit_captioner(session, data=data, model_params=MODEL, cfg=CFG)
    history = [h["epoch"] for h in session.history]
    assert history == list(range(CFG.epochs))
    assert session.history[-1]["train_loss"] < session.history[0]["train_loss"] / 3
    model = build_model(CaptionerConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["best_model"])
    preds, attention = decode_split(model, data, data.splits["test"], beam_size=2)
    assert preds == {i: r[0] for i, r in data.splits["test"].references.items()}
    assert all(a.shape[1] == 4 and np.allclose(a.sum(1), 1, atol=1e-3) for a in attention.values())


def test_resume_continues_after_last_reported_epoch():
    data = tiny_data()
    first = LocalSession()
    fit_captioner(first, data=data, model_params=MODEL, cfg=dataclasses.replace(CFG, epochs=2))
    resumed = LocalSession(initial_state=first.last_state)
    state = fit_captioner(resumed, data=data, model_params=MODEL, cfg=dataclasses.replace(CFG, epochs=4))
    assert [h["epoch"] for h in resumed.history] == [2, 3]
    assert [h["epoch"] for h in state["history"]] == [0, 1, 2, 3]


def test_early_stopping_stops_when_val_cider_stalls():
    data = tiny_data()
    session = LocalSession()
    cfg = dataclasses.replace(CFG, epochs=30, lr=0.0, early_stopping_patience=2)  # lr 0: nothing improves
    fit_captioner(session, data=data, model_params=MODEL, cfg=cfg)
    assert len(session.history) == 3


def test_failure_injection_fails_once(tmp_path):
    data = tiny_data()
    cfg = dataclasses.replace(CFG, epochs=3, fail_at_epoch=1)
    session = LocalSession()
    with pytest.raises(InjectedFailure, match="epoch 1"):
        fit_captioner(session, data=data, model_params=MODEL, cfg=cfg, storage_dir=str(tmp_path))
    restarted = LocalSession(initial_state=session.last_state)
    fit_captioner(restarted, data=data, model_params=MODEL, cfg=cfg, storage_dir=str(tmp_path))
    assert [h["epoch"] for h in session.history + restarted.history] == [0, 1, 2]


def test_interrupted_and_resumed_run_equals_an_uninterrupted_one_byte_for_byte(tmp_path):
    """Dropout, the shuffle, scheduled sampling, grid shifts and a cosine schedule all in play: the resumed
    run's weights, best model and history are those of the uninterrupted run."""
    data = tiny_data()
    model_params = dataclasses.replace(MODEL, dropout=0.3)
    cfg = dataclasses.replace(CFG, epochs=4, lr_schedule="cosine", scheduled_sampling=0.5, grid_shift=1)
    straight = LocalSession()
    expected = fit_captioner(straight, data=data, model_params=model_params, cfg=cfg)

    faulty = dataclasses.replace(cfg, fail_at_epoch=2)
    first = LocalSession()
    with pytest.raises(InjectedFailure):
        fit_captioner(first, data=data, model_params=model_params, cfg=faulty, storage_dir=str(tmp_path))
    resumed = LocalSession(initial_state=first.last_state)
    state = fit_captioner(resumed, data=data, model_params=model_params, cfg=faulty, storage_dir=str(tmp_path))

    assert [h["epoch"] for h in first.history] == [0, 1] and [h["epoch"] for h in resumed.history] == [2, 3]
    for key in ("model", "best_model"):
        final, reference = resumed.last_state[key], straight.last_state[key]
        assert final.keys() == reference.keys()
        assert all(torch.equal(final[k], reference[k]) for k in final), key
    drop = ("train_captions_per_s", "epoch_seconds")
    assert [{k: v for k, v in h.items() if k not in drop} for h in state["history"]] == \
        [{k: v for k, v in h.items() if k not in drop} for h in expected["history"]]


def test_grid_shift_changes_what_the_model_is_trained_on_and_is_checked_against_the_grid():
    data = tiny_data()  # a 2x2 grid
    cfg = dataclasses.replace(CFG, epochs=1)
    plain, shifted = LocalSession(), LocalSession()
    fit_captioner(plain, data=data, model_params=MODEL, cfg=cfg)
    fit_captioner(shifted, data=data, model_params=MODEL, cfg=dataclasses.replace(cfg, grid_shift=1))
    assert not torch.equal(plain.last_state["model"]["encoder.position"],
                           shifted.last_state["model"]["encoder.position"])
    with pytest.raises(ConfigError, match=r"train_captioner\.train\.grid_shift: 2 .* 4 positions"):
        fit_captioner(LocalSession(), data=data, model_params=MODEL, cfg=dataclasses.replace(cfg, grid_shift=2))
