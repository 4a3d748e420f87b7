"""The caption-conditioned generator: shapes, conditioning, a training step, determinism, resume, bad captions."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch
from PIL import Image

from components.data.text import Vocab
from components.generative.ema import EMA
from components.generative.steps import make_gan_optimizers
from components.imagine.config import ImagineConfig, ImagineTrainParams
from components.imagine.data import pad
from components.imagine.fit import cvae_train_step, fit_imagine, train_step
from components.imagine.io import MAX_IMAGES_PER_CAPTION, Imaginer, save_model_dir
from components.imagine.models import (CVAE, CaptionError, ConditionalDecoder, ConditionalEncoder, ConditionalGenerator,
                                       ProjectionDiscriminator, build_parts, encode_captions, imagine)
from components.train.session import LocalSession
from pipelines import imagine as imagine_cli
from tests import fixtures_models

CFG = ImagineConfig(kind="gan", image_size=32, latent_dim=8, text_dim=16, word_dim=8, g_channels=8, d_channels=8, ema_decay=0.9)
TRAIN = ImagineTrainParams(epochs=2, batch_size=8, lr_g=2e-4, lr_d=2e-4, betas=(0.0, 0.9), augment="translation",
                           mismatch_weight=1.0, kl_weight=1.0, num_samples=4, sample_seed=0, seed=0, precision="fp32", channels_last=False, threads_per_worker=1,
                           fail_at_epoch=-1)
V = 12


CVAE_CFG = dataclasses.replace(CFG, kind="cvae")


def _captions(n: int, seed: int = 0) -> list[list[list[int]]]:
    g = torch.Generator().manual_seed(seed)
    return [[torch.randint(4, V, (int(torch.randint(1, 5, (1,), generator=g)),), generator=g).tolist()
             for _ in range(2)] for _ in range(n)]


def _data(n: int = 24) -> dict:
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    tokens = _captions(n)
    return {"train_images": images, "train_tokens": tokens, "val_images": images[:4],
            "val_tokens": [t[0] for t in tokens[:4]], "vocab_size": V, "model_cfg": CFG}


def test_shapes_and_value_range():
    torch.manual_seed(0)
    G, D = ConditionalGenerator(CFG, V), ProjectionDiscriminator(CFG, V)
    tokens, lengths = pad([[4, 5, 6], [7], [8, 9]])
    x = G(torch.randn(3, CFG.latent_dim), tokens, lengths)
    assert x.shape == (3, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    assert D(x, tokens, lengths).shape == (3,)
    assert D(torch.cat([x, x]), tokens, lengths, (0, 1)).shape == (6,)  # two chunks: own and rolled captions
    out = imagine(G, tokens, lengths, 2, seed=0)
    assert out.shape == (3, 2, 32, 32, 3) and out.dtype == torch.uint8


def test_the_caption_changes_the_image_and_padding_does_not():
    torch.manual_seed(0)
    G = ConditionalGenerator(CFG, V)
    for p in G.parameters():  # FiLM starts at identity: give the caption a say at once
        p.data.add_(0.05 * torch.randn_like(p))
    G.eval()
    z = torch.randn(1, CFG.latent_dim)
    a = G(z, *pad([[4, 5]]))
    b = G(z, *pad([[6, 7]]))
    assert not torch.allclose(a, b, atol=1e-4)
    padded = torch.tensor([[4, 5, 0, 0]])
    torch.testing.assert_close(G(z, padded, torch.tensor([2])), a)  # the state after the last word, not after <pad>


def test_one_training_step_moves_both_players_and_is_finite():
    torch.manual_seed(0)
    G, D = ConditionalGenerator(CFG, V), ProjectionDiscriminator(CFG, V)
    ema = EMA(G, decay=0.9)
    opt_g, opt_d = make_gan_optimizers(G, D, lr_g=1e-3, lr_d=1e-3, betas=(0.0, 0.9))
    before_g = [p.detach().clone() for p in G.parameters()]
    before_d = [p.detach().clone() for p in D.parameters()]
    images = torch.rand(4, 3, 32, 32) * 2 - 1
    out = train_step(G, D, images, *pad([[4, 5], [6], [7, 8, 9], [10]]), opt_g, opt_d, ema=ema, mismatch_weight=1.0,
                     generator=torch.Generator().manual_seed(0), augment=None)
    assert all(torch.isfinite(v) for v in out.values()) and float(out["d_mismatch"]) > 0
    assert any(not torch.equal(a, b) for a, b in zip(before_g, G.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(before_d, D.parameters()))
    assert G.text.embed.weight.grad is not None and D.text.embed.weight.grad is not None  # both read the caption


@pytest.mark.parametrize("channels_last", [False, True])
def test_training_is_deterministic_and_a_resumed_run_equals_an_uninterrupted_one(channels_last):
    train = dataclasses.replace(TRAIN, channels_last=channels_last)
    straight = fit_imagine(LocalSession(), cfg=dataclasses.replace(train, epochs=3), **_data())
    again = fit_imagine(LocalSession(), cfg=dataclasses.replace(train, epochs=3), **_data())
    first = LocalSession()
    fit_imagine(first, cfg=train, **_data())  # 2 epochs, then a fresh process resumes from its checkpoint
    resumed = fit_imagine(LocalSession(initial_state=first.last_state), cfg=dataclasses.replace(train, epochs=3),
                          **_data())
    weight = next(v for v in straight["discriminator"].values() if v.dim() == 4 and v.shape[1] > 1 and v.shape[-1] > 1)
    assert weight.is_contiguous(memory_format=torch.channels_last) == channels_last
    for key in ("generator", "generator_ema", "discriminator"):
        for name, value in straight[key].items():
            assert torch.equal(value, again[key][name]), (key, name)
            assert torch.equal(value, resumed[key][name]), (key, name)
    assert [r["d_loss"] for r in straight["history"]] == [r["d_loss"] for r in resumed["history"]]
    assert straight["progress"].shape == (3, 4, 32, 32, 3)


def test_cvae_shapes_and_loss_terms():
    torch.manual_seed(0)
    dec, enc = ConditionalDecoder(CVAE_CFG, V), ConditionalEncoder(CVAE_CFG, V)
    tokens, lengths = pad([[4, 5, 6], [7], [8, 9]])
    x = dec(torch.randn(3, CFG.latent_dim), tokens, lengths)
    assert x.shape == (3, 3, 32, 32)
    mu, logvar = enc(x.clamp(-1, 1), tokens, lengths)
    assert mu.shape == logvar.shape == (3, CFG.latent_dim)
    out = CVAE(enc, dec)(x.detach().clamp(-1, 1), tokens, lengths, torch.randn(3, CFG.latent_dim), kl_weight=0.5)
    assert all(v.shape == () and torch.isfinite(v) for v in out.values())
    assert float(out["recon_nll"].detach()) > 0 and float(out["kl"].detach()) >= 0
    torch.testing.assert_close(out["loss"], out["recon_nll"] + 0.5 * out["kl"])
    images = imagine(dec, tokens, lengths, 2, seed=0)
    assert images.shape == (3, 2, 32, 32, 3) and images.dtype == torch.uint8
    assert set(build_parts(CVAE_CFG, V)) == {"generator", "generator_ema", "encoder"}


def test_cvae_caption_changes_the_image_and_padding_does_not():
    torch.manual_seed(0)
    dec = ConditionalDecoder(CVAE_CFG, V)
    for p in dec.parameters():  # FiLM starts at identity: give the caption a say at once
        p.data.add_(0.05 * torch.randn_like(p))
    dec.eval()
    z = torch.randn(1, CFG.latent_dim)
    a = dec(z, *pad([[4, 5]]))
    assert not torch.allclose(a, dec(z, *pad([[6, 7]])), atol=1e-4)
    torch.testing.assert_close(dec(z, torch.tensor([[4, 5, 0, 0]]), torch.tensor([2])), a)
    torch.testing.assert_close(dec(z.repeat(3, 1), *pad([[4, 5]] * 3))[1:2], a)  # per example: no batch statistics


def test_one_cvae_training_step_moves_encoder_and_decoder():
    torch.manual_seed(0)
    model = CVAE(ConditionalEncoder(CVAE_CFG, V), ConditionalDecoder(CVAE_CFG, V))
    ema = EMA(model.decoder, decay=0.9)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    images = torch.rand(4, 3, 32, 32) * 2 - 1
    out = cvae_train_step(model, images, *pad([[4, 5], [6], [7, 8, 9], [10]]), opt, ema=ema, kl_weight=1.0,
                          generator=torch.Generator().manual_seed(0))
    assert all(torch.isfinite(v) for v in out.values()) and float(out["pixel_std"]) > 0
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()) if a.numel() > 1
               and not a.eq(0).all())  # every initialised weight moved
    assert model.encoder.text.embed.weight.grad is not None and model.decoder.text.embed.weight.grad is not None
    assert ema.num_updates == 1


def test_cvae_training_is_deterministic_resumable_and_loads_as_an_imaginer(tmp_path):
    data = {**_data(), "model_cfg": CVAE_CFG}
    train = dataclasses.replace(TRAIN, lr_g=1e-3, betas=(0.9, 0.999))
    straight = fit_imagine(LocalSession(), cfg=dataclasses.replace(train, epochs=3), **data)
    again = fit_imagine(LocalSession(), cfg=dataclasses.replace(train, epochs=3), **data)
    first = LocalSession()
    fit_imagine(first, cfg=train, **data)
    resumed = fit_imagine(LocalSession(initial_state=first.last_state), cfg=dataclasses.replace(train, epochs=3),
                          **data)
    for key in ("generator", "generator_ema", "encoder"):
        for name, value in straight[key].items():
            assert torch.equal(value, again[key][name]), (key, name)
            assert torch.equal(value, resumed[key][name]), (key, name)
    assert [r["loss"] for r in straight["history"]] == [r["loss"] for r in resumed["history"]]
    assert straight["progress"].shape == (3, 4, 32, 32, 3)
    parts = build_parts(CVAE_CFG, V)
    for name, module in parts.items():
        module.load_state_dict(straight[name])
    vocab = Vocab.build([["a", "red", "circle", "blue", "square", "left", "of", "small"]], min_word_count=1,
                        max_caption_length=4)
    assert len(vocab) == V
    imaginer = Imaginer(save_model_dir(tmp_path / "cvae", parts, CVAE_CFG, vocab))
    a = imaginer(["a red circle"], n=2, seed=3)
    assert a.shape == (1, 2, 32, 32, 3) and torch.equal(a, imaginer(["a red circle"], n=2, seed=3))


def test_captions_the_model_cannot_read_are_refused_naming_the_problem():
    vocab = Vocab.build([["a", "red", "circle"]], min_word_count=1, max_caption_length=4)
    tokens, lengths = encode_captions(["A red circle.", "circle"], vocab)
    assert tokens.tolist() == [[vocab.id("a"), vocab.id("red"), vocab.id("circle")], [vocab.id("circle"), 0, 0]]
    assert lengths.tolist() == [3, 1]
    with pytest.raises(CaptionError, match="empty caption"):
        encode_captions(["  ..."], vocab)
    with pytest.raises(CaptionError, match="outside the vocabulary: green, hexagon"):
        encode_captions(["a green hexagon circle"], vocab)
    with pytest.raises(CaptionError, match="5 words, more than the 4"):
        encode_captions(["a red circle a red"], vocab)


def test_imaginer_is_seeded_and_bounded(tmp_path):
    folder = fixtures_models.imagine_dir(tmp_path / "imagine")
    imaginer = Imaginer(folder)
    a = imaginer(["a red circle", "a blue square"], n=3, seed=7)
    assert a.shape == (2, 3, 32, 32, 3)
    assert torch.equal(a, imaginer(["a red circle", "a blue square"], n=3, seed=7))
    assert not torch.equal(a, imaginer(["a red circle", "a blue square"], n=3, seed=8))
    with pytest.raises(ValueError, match=f"n must be in 1..{MAX_IMAGES_PER_CAPTION}"):
        imaginer(["a red circle"], n=MAX_IMAGES_PER_CAPTION + 1)


def test_cli_writes_a_grid_and_refuses_unknown_words(tmp_path, capsys):
    folder = fixtures_models.imagine_dir(tmp_path / "imagine")
    out = tmp_path / "out.png"
    imagine_cli.main(["a small red circle", str(out), "-n", "4", "--seed", "1", "--model", str(folder)])
    with Image.open(out) as im:
        assert im.size[0] > 4 * 32 and im.size[1] >= 32
    with pytest.raises(SystemExit) as exit_info:
        imagine_cli.main(["a purple hexagon", str(tmp_path / "bad.png"), "--model", str(folder)])
    assert exit_info.value.code == 2
    assert "outside the vocabulary: hexagon, purple" in capsys.readouterr().err
    assert not (tmp_path / "bad.png").exists()


def test_served_model_answers_bad_requests_as_invalid_parameters(tmp_path):
    from mlflow.exceptions import MlflowException

    from components.imagine.serving import ImagineModel

    model = ImagineModel()
    model.load_context(type("Context", (), {"artifacts": {"model_dir": str(fixtures_models.imagine_dir(tmp_path))}}))
    answer = model.predict(None, pd.DataFrame({"caption": ["a red circle"], "n": [2], "seed": [0]}))
    assert list(answer.columns) == ["caption", "index", "image"] and len(answer) == 2
    for bad in ({"caption": ["a purple circle"], "n": [1], "seed": [0]}, {"caption": [""], "n": [1], "seed": [0]},
                {"caption": ["a red circle"], "n": [0], "seed": [0]}):
        with pytest.raises(MlflowException) as err:
            model.predict(None, pd.DataFrame(bad))
        assert err.value.error_code == "INVALID_PARAMETER_VALUE"


def test_consistency_scores_a_reading_by_object_and_by_attribute():
    from components.data.scene_language import SceneObject
    from components.imagine.evaluation import consistency

    scene = [SceneObject("circle", "red", "small", 0.2, 0.5), SceneObject("square", "blue", "large", 0.8, 0.5)]
    right = "a small red circle to the left of a large blue square"
    blurred = "a small red square to the left of a large blue circle"  # colours and sizes right, shapes swapped
    got = consistency([right, blurred], [scene, scene], prefix="")
    assert got["object_f1"] == 0.5 and got["exact_scene_accuracy"] == 0.5
    assert got["colour_f1"] == 1.0 and got["size_colour_f1"] == 1.0 and got["shape_f1"] == 1.0  # as multisets
    assert got["exact_scene_accuracy_2_objects"] == 0.5
    one = consistency(["a large green triangle"], [[SceneObject("triangle", "green", "large", 0.5, 0.5)]], prefix="x_")
    assert one["x_object_f1"] == 1.0 and one["x_exact_scene_accuracy_1_objects"] == 1.0
