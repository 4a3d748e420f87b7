"""VAE and GAN training on local Ray Train: the stages' outputs, 2-worker DDP, resume, NaN stop.

Tiny data (the smoke profile's 60 synthetic images, models at 16 px); each test
is one or two Ray Train runs of a few seconds after the workers start.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import crash_hooks
import ddp_checks
import mlflow_checks
import pytest
from smoke_data import prepare_smoke
import torch
from PIL import Image

from components.generative.fit import train_loop_per_worker_gan, train_loop_per_worker_vae
from components.generative.io import load_generator, load_model_dir
from components.train.config import ScalingParams
from components.train.ray_trainer import TrainingFailed, fit, make_trainer
from components import families
from components.generative.data import image_splits
from pipelines import sample, train

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The smoke profile's prepared synthetic dataset, in a folder that is the cwd during each test."""
    return prepare_smoke(tmp_path_factory, "generative")


@pytest.fixture
def in_smoke(smoke, monkeypatch, tmp_path):
    work, params = smoke
    monkeypatch.chdir(work)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return params


def _outputs(tmp_path: Path, name: str) -> dict[str, Path]:
    return {"model": tmp_path / "models" / name, "reports": tmp_path / "reports" / name,
            "metrics": tmp_path / "metrics" / f"{name}.json", "plots": tmp_path / "plots" / f"{name}.csv"}


def _train(name: str, cfg, tmp_path: Path, paths: dict[str, Path]) -> dict:
    """``python -m pipelines.train --family <name>`` on the smoke data, in this process."""
    return train.run(families.get(name), cfg, inputs={"prepared": Path("data/prepared")}, outputs=paths,
                     storage=tmp_path / "ray_results", params_file=str(REPO / "params.yaml"))


def _check_common_outputs(paths: dict[str, Path], pngs: set[str], epochs: int, size: int) -> dict:
    assert {p.name for p in paths["reports"].iterdir()} == pngs
    for name in pngs:
        with Image.open(paths["reports"] / name) as img:
            assert img.mode == "RGB" and img.width > size
    rows = paths["plots"].read_text().splitlines()
    assert rows[0].startswith("epoch,") and len(rows) == 1 + epochs
    # nothing half-written left beside the outputs
    assert not [p for p in paths["model"].parent.iterdir() if p.name.startswith(".")]
    return json.loads(paths["metrics"].read_text())


def test_train_vae_stage_writes_a_model_that_rebuilds_alone_and_samples(in_smoke, ray_session, tmp_path):
    cfg = in_smoke.train_vae
    paths = _outputs(tmp_path, "vae")
    metrics = _train("vae", cfg, tmp_path, paths)
    got = _check_common_outputs(paths, {"samples.png", "reconstructions.png", "interpolations.png",
                                        "progress.png"}, cfg.train.epochs, cfg.model.image_size)
    assert got == json.loads(json.dumps(metrics))
    for key in ("test_elbo", "test_bits_per_dim", "test_iwae_nll", "test_iwae_bits_per_dim", "test_elbo_at_init",
                "sample_diversity", "colour_hist_distance", "recon_colour_hist_distance"):
        assert np.isfinite(got[key]), key
    assert got["test_elbo"] > got["test_elbo_at_init"]
    assert got["epochs_run"] == cfg.train.epochs

    loaded = load_model_dir(paths["model"])
    assert loaded.family == "vae" and loaded.cfg == cfg.model and set(loaded.parts) == {"vae"}

    # the CLI: same seed, same picture; another seed, another one
    outs = [tmp_path / f"s{i}.png" for i in range(3)]
    for out, seed in zip(outs, (1, 1, 2)):
        sample.main(["--model", str(paths["model"]), "-n", "9", "--seed", str(seed), str(out)])
    assert outs[0].read_bytes() == outs[1].read_bytes() != outs[2].read_bytes()
    with Image.open(outs[0]) as img:  # 3 x 3 images of 16 px with 2 px padding
        assert img.size == (3 * 16 + 4 * 2, 3 * 16 + 4 * 2)


def test_train_gan_stage_writes_generator_ema_and_diagnostics(in_smoke, ray_session, tmp_path):
    cfg = in_smoke.train_gan
    paths = _outputs(tmp_path, "gan")
    _train("gan", cfg, tmp_path, paths)
    got = _check_common_outputs(paths, {"samples.png", "interpolations.png", "progress.png"}, cfg.train.epochs,
                                cfg.model.image_size)
    for key in ("sample_diversity", "colour_hist_distance", "colour_hist_distance_real", "d_loss", "g_loss"):
        assert np.isfinite(got[key]), key
    loaded = load_model_dir(paths["model"])
    assert set(loaded.parts) == {"generator", "generator_ema", "discriminator"}
    sampler, model_cfg = load_generator(paths["model"])
    assert model_cfg == cfg.model
    assert all(torch.equal(a, b) for a, b in zip(sampler.state_dict().values(),
                                                 loaded.parts["generator_ema"].state_dict().values()))


def _poison_discriminator(G, D, step):
    """``on_step`` hook: NaN weights in D after the first step of epoch 2 (3 steps per epoch)."""
    if step == 6:
        with torch.no_grad():
            next(D.parameters()).fill_(float("nan"))


def _trainer(in_smoke, kind: str, storage: Path, run_name: str, *, num_workers: int = 1, max_failures: int = 0,
             on_step=None, logger=None, **train_overrides):
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the hooks travel by value
    ddp_checks.send_by_value()
    crash_hooks.send_by_value()
    cfg = in_smoke.train_vae if kind == "vae" else in_smoke.train_gan
    paths = image_splits(Path("data/prepared"))
    config = {"paths": {"train": paths["train"], "val": paths["val"]}, "model": cfg.model,
              "train": dataclasses.replace(cfg.train, **train_overrides), "on_step": on_step}
    loop = train_loop_per_worker_vae if kind == "vae" else train_loop_per_worker_gan
    return make_trainer(loop, config, scaling=ScalingParams(num_workers=num_workers, use_gpu=False,
                                                            max_failures=max_failures),
                        run_name=run_name, storage_path=str(storage), logger=logger)


@pytest.mark.parametrize("channels_last", [False, True])
def test_gan_ddp_two_workers_keep_identical_weights(in_smoke, ray_session, tmp_path, channels_last):
    state = fit(_trainer(in_smoke, "gan", tmp_path, "ddp", num_workers=2, on_step=ddp_checks.gan_ranks_in_sync,
                         epochs=1, batch_size=8, channels_last=channels_last))
    assert state["step"] == 3  # 48 train images: 24 per rank, 3 batches of 8
    assert state["history"][0]["train_images_per_s"] > 0


def test_gan_worker_failure_restarts_from_the_checkpoint_without_losing_or_repeating_epochs(
        in_smoke, ray_session, tmp_path):
    logger = mlflow_checks.fresh_run_logger("faulty-gan")
    state = fit(_trainer(in_smoke, "gan", tmp_path, "faulty", num_workers=2, max_failures=1, logger=logger,
                         epochs=3, batch_size=8, fail_at_epoch=1), logger=logger)
    assert [row["epoch"] for row in state["history"]] == [0, 1, 2]
    assert (tmp_path / "faulty" / "injected-failure-epoch-1").exists()
    assert mlflow_checks.logged_steps(logger, "d_loss") == [0, 1, 2]


def _assert_same_gan_weights(a: dict, b: dict) -> None:
    for part in ("generator", "discriminator", "generator_ema"):
        assert a[part].keys() == b[part].keys()
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part


def test_gan_worker_sigkill_keeps_each_epoch_once_and_the_weights_of_an_uninterrupted_run(
        in_smoke, ray_session, tmp_path):
    """Rank 0's worker process is SIGKILLed after the first step of epoch 2 (3 steps per epoch): Ray
    restarts the group from the epoch-1 checkpoint; only epoch 2 is trained again."""
    flag = tmp_path / "killed"
    logger = mlflow_checks.fresh_run_logger("sigkill-gan")
    killed = fit(_trainer(in_smoke, "gan", tmp_path, "sigkill", max_failures=1, logger=logger, epochs=4,
                          on_step=crash_hooks.gan_sigkill_at(flag, 6)), logger=logger)
    assert flag.exists()  # it did die
    assert [row["epoch"] for row in killed["history"]] == [0, 1, 2, 3]
    assert mlflow_checks.logged_steps(logger, "d_loss") == [0, 1, 2, 3]
    straight = fit(_trainer(in_smoke, "gan", tmp_path, "straight", epochs=4))
    _assert_same_gan_weights(killed, straight)
    assert killed["step"] == straight["step"]


def test_resume_continues_from_the_last_checkpoint_then_a_nan_stops_it(in_smoke, ray_session, tmp_path):
    first = fit(_trainer(in_smoke, "gan", tmp_path, "resume", epochs=1))
    assert [row["epoch"] for row in first["history"]] == [0]
    second = fit(_trainer(in_smoke, "gan", tmp_path, "resume", epochs=2))
    assert [row["epoch"] for row in second["history"]] == [0, 1]
    assert second["history"][0] == first["history"][0]  # epoch 0 restored, not run again
    assert second["step"] == 2 * first["step"]

    with pytest.raises(TrainingFailed, match=r"non-finite .* at step 7 \(epoch 2\).*last good checkpoint: epoch 1"):
        fit(_trainer(in_smoke, "gan", tmp_path, "resume", epochs=4, on_step=_poison_discriminator))
    kept = train.last_checkpoint(tmp_path, "resume")
    assert kept is not None and kept.name == "epoch-0001"
