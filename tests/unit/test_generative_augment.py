"""DiffAugment: what each transformation does to known images, seeding, gradients, the GAN step."""

from __future__ import annotations

import pytest
import torch

from components.generative.augment import AUGMENTATIONS, cutout, translation
from components.generative.ema import EMA
from components.generative.models import build_gan
from components.generative.steps import gan_train_step, make_gan_optimizers
from tests.unit.test_generative_gan import real_batch, tiny_cfg


def dots(n: int = 64, size: int = 16) -> torch.Tensor:
    """Each image: one pixel at (8, 8) with value 1 in channel 0, 2 in channel 1, rest 0."""
    x = torch.zeros(n, 2, size, size)
    x[:, 0, 8, 8], x[:, 1, 8, 8] = 1.0, 2.0
    return x


def test_translation_moves_each_image_by_at_most_an_eighth_of_its_side():
    out = translation(dots(), generator=torch.Generator().manual_seed(0))
    assert out.shape == (64, 2, 16, 16)
    shifts = set()
    for img in out:
        where = img[0].nonzero().tolist()
        assert len(where) == 1  # the dot moved as a whole (max shift 2 px: it stays inside)
        (r, c), = where
        assert img[1, r, c] == 2.0 and img.sum() == 3.0  # both channels moved together, nothing else came in
        assert abs(r - 8) <= 2 and abs(c - 8) <= 2
        shifts.add((r - 8, c - 8))
    assert len(shifts) > 10  # shifts vary per image (25 possible)


def test_translation_fills_with_zeros():
    x = torch.ones(32, 1, 16, 16)
    out = translation(x, generator=torch.Generator().manual_seed(1))
    zeros_per_image = (out == 0).flatten(1).sum(1)
    assert ((out == 0) | (out == 1)).all()
    assert zeros_per_image.max() > 0 and zeros_per_image.max() <= 16 * 16 - 14 * 14  # at most 2 rows + 2 columns


def test_cutout_zeros_one_square_of_half_the_side_clipped_at_the_border():
    x = torch.rand(64, 3, 16, 16) + 1.0  # never 0
    out = cutout(x, generator=torch.Generator().manual_seed(0))
    zeroed = out[:, 0] == 0  # (B, H, W)
    assert torch.equal(zeroed[:, None].expand_as(out), out == 0)  # the same pixels in every channel
    assert torch.equal(out[out != 0], x[out != 0])  # the rest untouched
    for mask in zeroed:
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        assert mask.sum() == len(rows) * len(cols)  # a rectangle
        assert 1 <= len(rows) <= 8 and 1 <= len(cols) <= 8
    assert (zeroed.flatten(1).sum(1) == 64).any()  # a whole 8 x 8 square away from the border


@pytest.mark.parametrize("name", ["translation", "translation_cutout"])
def test_seeded_and_differentiable(name):
    fn = AUGMENTATIONS[name]
    x = torch.rand(8, 3, 16, 16, requires_grad=True)
    a = fn(x, torch.Generator().manual_seed(3))
    b = fn(x, torch.Generator().manual_seed(3))
    c = fn(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    a.sum().backward()
    assert x.grad is not None and 0 < x.grad.sum() <= x.numel()  # the pixels that survived get gradient 1
    assert AUGMENTATIONS["none"] is None


def test_gan_step_with_augmentation_trains_both_and_differs_from_without():
    def one_step(augment):
        torch.manual_seed(0)
        cfg = tiny_cfg(loss="hinge", spectral_norm=True, d_norm="none")
        G, D = build_gan(cfg)
        opt_g, opt_d = make_gan_optimizers(G, D, lr_g=1e-3, lr_d=1e-3, betas=(0.0, 0.9))
        m = gan_train_step(G, D, real_batch(), opt_g, opt_d, loss=cfg.loss, n_critic=1, gp_weight=0.0,
                           ema=EMA(G, decay=0.9), step=0, generator=torch.Generator().manual_seed(0),
                           augment=augment)
        return m, G.state_dict()

    plain, g_plain = one_step(None)
    augmented, g_aug = one_step(AUGMENTATIONS["translation_cutout"])
    assert set(augmented) == set(plain) and all(torch.isfinite(torch.tensor(v)) for v in augmented.values())
    assert augmented["d_real"] != plain["d_real"]  # D saw other images
    assert any(not torch.equal(g_plain[k], g_aug[k]) for k in g_plain)  # and G's gradient went through T
