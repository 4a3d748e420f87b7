"""The ``precision`` param: what ``auto`` resolves to, and that a bf16 training step is deterministic."""

from __future__ import annotations

import pytest
import torch

from components.train import precision
from components.train.precision import autocast_dtype, resolve


def test_explicit_choices_are_kept_and_auto_follows_the_cpu(monkeypatch):
    assert resolve("fp32", "cpu") == "fp32" and autocast_dtype("fp32", "cpu") is None
    assert resolve("bf16", "cpu") == "bf16" and autocast_dtype("bf16", "cpu") is torch.bfloat16
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: True)
    assert resolve("auto", "cpu") == "bf16"
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: False)
    assert resolve("auto", "cpu") == "fp32" and autocast_dtype("auto", "cpu") is None
    with pytest.raises(ValueError, match="auto | bf16 | fp32"):
        resolve("fp16", "cpu")


def test_cpu_flags_are_read_from_cpuinfo(tmp_path, monkeypatch):
    import builtins

    real_open = builtins.open
    for flags, want in (("fpu sse avx512_bf16 amx_tile", True), ("fpu sse avx2", False)):
        info = tmp_path / "cpuinfo"
        info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        monkeypatch.setattr(builtins, "open", lambda f, *a, **k: real_open(info if f == "/proc/cpuinfo" else f, *a, **k))
        precision.cpu_has_fast_bf16.cache_clear()
        assert precision.cpu_has_fast_bf16() is want
    monkeypatch.setattr(builtins, "open", real_open)
    precision.cpu_has_fast_bf16.cache_clear()


def test_params_refuse_an_unknown_precision():
    from components.config import ConfigError
    from components.generative.config import VAETrainParams

    with pytest.raises(ConfigError, match="precision"):
        VAETrainParams(epochs=1, batch_size=4, lr=1e-3, betas=(0.9, 0.999), grad_clip=0.0, iw_samples=0,
                       num_samples=4, sample_seed=0, seed=0, precision="fp16", channels_last=False, threads_per_worker=1,
                       fail_at_epoch=-1)
