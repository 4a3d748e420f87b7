"""The generic train stage's driver helpers, the VAE/GAN family helpers and ``capsynth sample``, without Ray."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from components import families
from components.data.folders import PreparedDir
from components.generative.config import GANConfig, VAEConfig
from components.generative.data import image_splits
from components.generative.family import interleave
from components.generative.io import save_model_dir
from components.generative.models import build_gan, build_vae
from components.train.ray_trainer import TrainingFailed
from pipelines import cli, sample, train
from pipelines.common import StageFailed, stage_main
from pipelines.config import load_params


@pytest.fixture
def gan_dir(tmp_path) -> Path:
    cfg = GANConfig(image_size=16, latent_dim=8, g_channels=8, d_channels=8, loss="non_saturating",
                    d_norm="batch", spectral_norm=False, n_critic=1, gp_weight=0.0, ema_decay=0.9)
    torch.manual_seed(0)
    G, D = build_gan(cfg)
    return save_model_dir(tmp_path / "gan", "gan", {"generator": G, "generator_ema": G, "discriminator": D}, cfg)


def test_sample_cli_is_deterministic_per_seed(gan_dir, tmp_path, capsys):
    outs = [tmp_path / f"{i}.png" for i in range(3)]
    for out, seed in zip(outs, (5, 5, 6)):
        cli.main(["sample", "--model", str(gan_dir), "-n", "6", "--seed", str(seed), str(out)])
    assert outs[0].read_bytes() == outs[1].read_bytes() != outs[2].read_bytes()
    with Image.open(outs[0]) as img:  # ceil(sqrt(6)) = 3 per row, 2 rows of 16 px, 2 px padding
        assert img.size == (3 * 16 + 4 * 2, 2 * 16 + 3 * 2)
    assert "6 samples" in capsys.readouterr().out


def test_sample_cli_vae_folder_and_clear_errors(tmp_path, capsys):
    cfg = VAEConfig(image_size=16, latent_dim=4, base_channels=4, decoder_res_blocks=1, likelihood="bernoulli", gaussian_std=0.1,
                    learn_std=False, beta=1.0)
    folder = save_model_dir(tmp_path / "vae", "vae", build_vae(cfg), cfg)
    sample.main(["--model", str(folder), "-n", "4", str(tmp_path / "v.png")])
    assert (tmp_path / "v.png").is_file()
    with pytest.raises(SystemExit) as exit_info:
        sample.main(["--model", str(tmp_path / "nowhere"), str(tmp_path / "x.png")])
    assert exit_info.value.code == 2
    assert "not a model folder" in capsys.readouterr().err


def test_find_model_dir_looks_inside_downloaded_artifacts(gan_dir, tmp_path):
    assert sample.find_model_dir(gan_dir.parent) == gan_dir
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no vae or gan model folder"):
        sample.find_model_dir(tmp_path / "empty")


@pytest.mark.slow
def test_sample_cli_reads_a_registered_model_by_alias(gan_dir, tmp_path, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    mlflow.set_experiment("sample-test")  # an experiment of this store, whatever earlier tests made active
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(gan_dir), artifact_path="model")
    client = MlflowClient()
    client.create_registered_model("capsynth-gan")
    version = client.create_model_version("capsynth-gan", source=f"{run.info.artifact_uri}/model",
                                          run_id=run.info.run_id)
    client.set_registered_model_alias("capsynth-gan", "champion", version.version)
    sample.main(["--model", "models:/capsynth-gan@champion", "-n", "4", "--seed", "1", "registry.png"])
    sample.main(["--model", str(gan_dir), "-n", "4", "--seed", "1", "folder.png"])
    assert Path("registry.png").read_bytes() == Path("folder.png").read_bytes()
    with pytest.raises(SystemExit):
        sample.main(["--model", "models:/capsynth-gan@nobody", "x.png"])


def test_a_failed_run_names_the_error_and_the_kept_checkpoint(tmp_path, monkeypatch, repo_root):
    cfg = load_params(repo_root / "params.yaml", profile="smoke").train_gan
    message = "TrainingDivergedError: non-finite d_loss = nan at step 7 (epoch 2): training stopped"
    monkeypatch.setattr(train, "make_trainer", lambda *a, **k: object())

    def failing_fit(trainer, **_):
        raise TrainingFailed(message)

    monkeypatch.setattr(train, "fit", failing_fit)
    gan = families.get("gan")
    run_name = train.run_name_of(gan, cfg, {"data_hash": "x"})
    kwargs = dict(inputs={}, storage=tmp_path, run_name=run_name, logger=None)
    no_data = dataclasses.replace(gan, loop_config=lambda cfg, inputs: {})  # no images to list
    with pytest.raises(StageFailed, match=r"\[no checkpoint on disk\]"):
        train.train_on_ray(no_data, cfg, **kwargs)
    for epoch in (0, 1):
        (tmp_path / run_name / f"epoch-{epoch:04d}").mkdir(parents=True)
    with pytest.raises(StageFailed) as err:
        train.train_on_ray(no_data, cfg, **kwargs)
    assert message in str(err.value)
    assert str(err.value).endswith(f"[last checkpoint on disk: {tmp_path / run_name / 'epoch-0001'}]")


def test_stage_failed_is_one_line_and_exit_code_1(capsys):
    @stage_main("train_gan")
    def main() -> None:
        raise StageFailed("gan training failed: non-finite d_loss")

    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip() == "capsynth train_gan: failed: gan training failed: non-finite d_loss"


def test_image_splits_makes_paths_absolute_and_needs_train_and_val(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    table = pa.table({"image_id": [1, 2, 3], "path": ["a.png", "/abs/b.png", "c.png"],
                      "split": ["train", "val", "test"]})
    pq.write_table(table, PreparedDir(tmp_path).images)
    splits = image_splits(tmp_path)
    assert splits == {"train": [str(tmp_path / "a.png")], "val": ["/abs/b.png"], "test": [str(tmp_path / "c.png")]}
    pq.write_table(table.slice(0, 1), PreparedDir(tmp_path).images)  # train only
    with pytest.raises(FileNotFoundError, match="no 'val' images"):
        image_splits(tmp_path)


def test_curves_and_interleave(tmp_path):
    train.write_curves(tmp_path / "c.csv", [{"epoch": 0, "a": 0.5}, {"epoch": 1, "a": 1 / 3, "b": 2.0}],
                       ("epoch", "a", "b"))
    assert (tmp_path / "c.csv").read_text() == "epoch,a,b\n0,0.5,\n1,0.333333,2\n"
    a, b = np.zeros((16, 2, 2, 3), np.uint8), np.ones((16, 2, 2, 3), np.uint8)
    rows = interleave(a, b, per_row=8)
    assert rows.shape == (32, 2, 2, 3)
    assert [int(rows[i].max()) for i in (0, 7, 8, 15, 16, 24)] == [0, 0, 1, 1, 0, 1]
