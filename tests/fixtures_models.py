"""Tiny model folders (random weights) for the registry and serving tests: built in seconds."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from components.captioning.io import save_model_dir as save_captioner_dir
from components.captioning.models import CaptionerConfig, build_model
from components.data.text import Vocab
from components.features.backbones import get_spec
from components.generative.config import GANConfig, VAEConfig
from components.generative.io import save_model_dir as save_generative_dir
from components.generative.models import build_gan, build_vae
from components.imagine.config import ImagineConfig
from components.imagine.io import save_model_dir as save_imagine_dir
from components.imagine.models import build_parts as build_imagine_parts

WORDS = ("a", "red", "circle", "blue", "square", "left", "of", "small", "green", "triangle")
# resnet18 cut after stage 2 (random weights: nothing to download), 32 px input, 2x2 grid
FEATURES = {"backbone": "resnet18", "weights": "random", "seed": 0, "input_size": 32, "stage": 2, "grid_size": 2}


def captioner_dir(path: Path, *, seed: int = 0) -> Path:
    """A caption model folder that :class:`components.captioning.inference.Captioner` loads."""
    vocab = Vocab.build([WORDS], min_word_count=1, max_caption_length=6)
    cfg = CaptionerConfig(architecture="show_attend_tell", cell="gru", vocab_size=len(vocab),
                             feature_dim=get_spec("resnet18").stage_channels(FEATURES["stage"]),
                             num_positions=FEATURES["grid_size"] ** 2, embed_dim=8, hidden_dim=16,
                             num_layers=1, dropout=0.0, attention_dim=8,
                             grid_layers=0, position_embedding=False)
    torch.manual_seed(seed)
    return save_captioner_dir(path, build_model(cfg), cfg, vocab, {"features": FEATURES})


def scst_dir(path: Path, *, seed: int = 1) -> Path:
    """An SCST-fine-tuned caption model folder: a captioner folder (other weights than :func:`captioner_dir`'s)."""
    return captioner_dir(path, seed=seed)


def gan_dir(path: Path, *, seed: int = 0) -> Path:
    cfg = GANConfig(image_size=16, latent_dim=8, g_channels=8, d_channels=8, loss="non_saturating",
                    d_norm="batch", spectral_norm=False, n_critic=1, gp_weight=0.0, ema_decay=0.9)
    torch.manual_seed(seed)
    G, D = build_gan(cfg)
    return save_generative_dir(path, "gan", {"generator": G, "generator_ema": G, "discriminator": D}, cfg)


def vae_dir(path: Path, *, seed: int = 0) -> Path:
    cfg = VAEConfig(image_size=16, latent_dim=4, base_channels=4, decoder_res_blocks=1, likelihood="bernoulli", gaussian_std=0.1,
                    learn_std=False, beta=1.0)
    torch.manual_seed(seed)
    return save_generative_dir(path, "vae", build_vae(cfg), cfg)


def imagine_dir(path: Path, *, seed: int = 0) -> Path:
    """A caption-conditioned generator folder that :class:`components.imagine.io.Imaginer` loads (words: WORDS)."""
    vocab = Vocab.build([WORDS], min_word_count=1, max_caption_length=6)
    cfg = ImagineConfig(kind="gan", image_size=32, latent_dim=4, text_dim=8, word_dim=4, g_channels=4, d_channels=4,
                        ema_decay=0.9)
    torch.manual_seed(seed)
    return save_imagine_dir(path, build_imagine_parts(cfg, len(vocab)), cfg, vocab)


def png_bytes(seed: int = 0, size: int = 40) -> bytes:
    """A random RGB image, PNG-encoded."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buf, format="PNG")
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims ``width`` x ``height`` (CRC fixed): a decompression bomb, in a few bytes."""
    png = png_bytes()
    ihdr = png[12:16] + struct.pack(">II", width, height) + png[24:29]  # chunk type, size, then depth .. interlace
    return png[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + png[33:]


def bad_images() -> dict[str, bytes]:
    """Encoded images a served captioner or ``capsynth caption`` must refuse, by case."""
    png = png_bytes()
    return {"empty": b"", "not an image": b"hello, world", "truncated": png[:len(png) // 2],
            "decompression bomb": png_claiming(100_000, 100_000)}
