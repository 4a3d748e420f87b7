"""The imagine family on Ray Train: the stage's outputs, DDP ranks in sync, a real SIGKILL resumed exactly once."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import crash_hooks
import ddp_checks
import mlflow_checks
import pytest
import torch
from PIL import Image
from smoke_data import prepare_smoke

from components import families
from components.imagine.data import captioned_images
from components.imagine.family import loop_config
from components.imagine.fit import train_loop_per_worker
from components.imagine.io import Imaginer
from components.train.config import ScalingParams
from components.train.ray_trainer import fit, make_trainer
from pipelines import train

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return prepare_smoke(tmp_path_factory, "imagine")


@pytest.fixture
def in_smoke(smoke, monkeypatch, tmp_path):
    work, params = smoke
    monkeypatch.chdir(work)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return params


def test_train_imagine_stage_writes_a_model_that_draws_captions(in_smoke, ray_session, tmp_path):
    cfg = in_smoke.train_imagine
    paths = {"model": tmp_path / "models" / "imagine", "reports": tmp_path / "reports" / "imagine",
             "metrics": tmp_path / "metrics" / "train_imagine.json", "plots": tmp_path / "plots" / "imagine.csv"}
    metrics = train.run(families.get("imagine"), cfg, inputs={"prepared": Path("data/prepared")}, outputs=paths,
                        storage=tmp_path / "ray_results", params_file=str(REPO / "params.yaml"))
    assert json.loads(paths["metrics"].read_text()) == json.loads(json.dumps(metrics))
    assert metrics["epochs_run"] == cfg.train.epochs and all(
        torch.isfinite(torch.tensor(metrics[k])) for k in ("d_loss", "g_loss", "d_mismatch"))
    assert {p.name for p in paths["reports"].iterdir()} == {"samples.png", "samples.json", "progress.png"}
    with Image.open(paths["reports"] / "samples.png") as im:
        assert im.width > 8 * cfg.model.image_size
    shown = json.loads((paths["reports"] / "samples.json").read_text())  # one caption per grid row
    assert shown == [c[0] for c in captioned_images(Path("data/prepared"), "test").captions[:8]]
    rows = paths["plots"].read_text().splitlines()
    assert rows[0].startswith("epoch,d_loss") and len(rows) == 1 + cfg.train.epochs
    images = Imaginer(paths["model"])(["a red circle"], n=2, seed=0)
    assert images.shape == (1, 2, cfg.model.image_size, cfg.model.image_size, 3)


def _trainer(in_smoke, storage: Path, run_name: str, *, num_workers: int = 1, max_failures: int = 0, on_step=None,
             logger=None, **train_overrides):
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ddp_checks.send_by_value()
    crash_hooks.send_by_value()
    cfg = in_smoke.train_imagine
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **train_overrides))
    config = {**loop_config(cfg, {"prepared": Path("data/prepared")}), "on_step": on_step}
    return make_trainer(train_loop_per_worker, config, scaling=ScalingParams(
        num_workers=num_workers, use_gpu=False, max_failures=max_failures), run_name=run_name,
        storage_path=str(storage), logger=logger)


def test_imagine_ddp_two_workers_keep_identical_weights(in_smoke, ray_session, tmp_path):
    state = fit(_trainer(in_smoke, tmp_path, "ddp", num_workers=2, on_step=ddp_checks.gan_ranks_in_sync,
                         epochs=1, batch_size=8))
    assert state["step"] == 3  # 48 train images: 24 per rank, 3 batches of 8


def test_imagine_worker_sigkill_keeps_each_epoch_once_and_the_weights_of_an_uninterrupted_run(
        in_smoke, ray_session, tmp_path):
    flag = tmp_path / "killed"
    logger = mlflow_checks.fresh_run_logger("sigkill-imagine")
    killed = fit(_trainer(in_smoke, tmp_path, "sigkill", max_failures=1, logger=logger, epochs=3, batch_size=16,
                          on_step=crash_hooks.gan_sigkill_at(flag, 4)), logger=logger)
    assert flag.exists()
    assert [row["epoch"] for row in killed["history"]] == [0, 1, 2]
    assert mlflow_checks.logged_steps(logger, "d_loss") == [0, 1, 2]
    straight = fit(_trainer(in_smoke, tmp_path, "straight", epochs=3, batch_size=16))
    for part in ("generator", "generator_ema", "discriminator"):
        assert all(torch.equal(killed[part][k], straight[part][k]) for k in straight[part]), part
