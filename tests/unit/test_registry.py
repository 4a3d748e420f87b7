"""The model registry and the stage runs, against a real MLflow store (a temporary SQLite file)."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from components import registry, tracking
from components.data.folders import PreparedDir
from components.registry import CHALLENGER, CHAMPION, KeyMetric, decide, key_metric
from pipelines import caption, register
from tests import fixtures_models


@pytest.fixture
def store(tmp_path, monkeypatch) -> Iterator[Path]:
    """The embedded store of a fresh 'repo' (the cwd): ``mlflow.db`` and ``mlartifacts/`` under tmp_path.

    MLflow's process-wide tracking URI and experiment are put back afterwards.
    """
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.delenv("CAPSYNTH_PIPELINE_RUN", raising=False)
    monkeypatch.chdir(tmp_path)
    from mlflow.tracking._tracking_service import utils as service

    # loads by models:/ URI read the process-wide URI: unset, whatever an earlier test left there,
    # so they resolve to the default store of the cwd, as in a fresh process
    monkeypatch.setattr(service, "_tracking_uri", None)
    with tracking._restore_globals():
        yield tmp_path


def _client(store: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking.tracking_uri(store))


@pytest.mark.parametrize("new,champion,higher,alias", [
    (0.9, 0.8, True, CHAMPION), (0.8, 0.8, True, CHALLENGER), (0.7, 0.8, True, CHALLENGER),
    (40.0, 50.0, False, CHAMPION), (50.0, 50.0, False, CHALLENGER), (60.0, 50.0, False, CHALLENGER),
])
def test_champion_only_on_a_strictly_better_metric(new, champion, higher, alias):
    decision = decide(KeyMetric("m", new), KeyMetric("m", champion), names=("m",), higher_is_better=higher,
                      champion_version="3")
    assert decision.alias == alias
    assert "champion v3" in decision.reason


def test_decide_without_a_metric_or_a_champion():
    first = decide(KeyMetric("fid", 9.0), None, names=("fid", "kid"), higher_is_better=False)
    assert first.alias == CHAMPION
    missing = decide(None, KeyMetric("fid", 9.0), names=("fid", "kid"), higher_is_better=False,
                     champion_version="1")
    assert missing.alias == CHALLENGER and "fid or kid" in missing.reason
    other = decide(KeyMetric("kid", 0.01), KeyMetric("fid", 9.0), names=("fid", "kid"), higher_is_better=False,
                   champion_version="1")
    assert other.alias == CHALLENGER and "not comparable" in other.reason


def test_key_metric_takes_the_first_finite_number():
    names = registry.kinds()["gan"].metrics
    assert key_metric({"fid": 12.5, "kid": 0.1}, names) == KeyMetric("fid", 12.5)
    assert key_metric({"fid": None, "kid": 0.1}, names) == KeyMetric("kid", 0.1)
    assert key_metric({"fid": float("nan"), "inception_score": None}, names) is None


def test_gan_champion_moves_on_lower_fid_and_reregistering_is_idempotent(store):
    folders = [fixtures_models.gan_dir(store / f"gan{i}", seed=i) for i in range(3)]
    with tracking.stage_run("register", params={}):
        first = registry.register("gan", folders[0], {"fid": 50.0})
        worse = registry.register("gan", folders[1], {"fid": 60.0})
        better = registry.register("gan", folders[2], {"fid": 40.0})
        again = registry.register("gan", folders[2], {"fid": 40.0})
    assert (first.version, first.alias) == ("1", CHAMPION)
    assert (worse.version, worse.alias) == ("2", CHALLENGER) and "60 >= 50" in worse.reason
    assert (better.version, better.alias, better.aliases) == ("3", CHAMPION, (CHAMPION,))
    assert not again.new_version and again.version == "3" and again.aliases == (CHAMPION,)
    client = _client(store)
    assert len(client.search_model_versions("name = 'capsynth-gan'")) == 3
    assert str(client.get_model_version_by_alias("capsynth-gan", CHAMPION).version) == "3"
    assert str(client.get_model_version_by_alias("capsynth-gan", CHALLENGER).version) == "2"
    tags = client.get_model_version("capsynth-gan", "3").tags
    assert tags[registry.WEIGHTS_TAG] == registry.folder_sha256(folders[2])
    assert (tags[registry.METRIC_TAG], float(tags[registry.METRIC_VALUE_TAG])) == ("fid", 40.0)


def test_generator_pyfunc_gives_seeded_pngs(store):
    import base64
    import io

    import mlflow
    import pandas as pd
    from PIL import Image

    folder = fixtures_models.vae_dir(store / "vae")
    with tracking.stage_run("register", params={}):
        done = registry.register("vae", folder, {"test_elbo": -300.0})
    model = mlflow.pyfunc.load_model(f"models:/capsynth-vae@{CHAMPION}")
    out = model.predict(pd.DataFrame({"n": [3, 3], "seed": [7, 7]}))
    assert done.alias == CHAMPION and list(out.columns) == ["seed", "index", "image"] and len(out) == 6
    assert out["image"][0] == out["image"][3]  # same seed, same image
    with Image.open(io.BytesIO(base64.b64decode(out["image"][0]))) as img:
        assert img.size == (16, 16) and img.mode == "RGB"
    with pytest.raises(Exception, match="row 0: n must be in 1..1024"):
        model.predict(pd.DataFrame({"n": [0], "seed": [0]}))


def test_generator_pyfunc_bounds_rows_and_images_with_limits_read_at_load(store, monkeypatch):
    """The limits come from the environment of the process that loads the model: no re-registering."""
    import mlflow
    import pandas as pd
    from mlflow.exceptions import MlflowException

    with tracking.stage_run("register", params={}):
        registry.register("gan", fixtures_models.gan_dir(store / "gan"), {"fid": 9.0})
    monkeypatch.setenv("CAPSYNTH_SERVE_MAX_ROWS", "2")
    monkeypatch.setenv("CAPSYNTH_SERVE_MAX_SAMPLES", "5")
    model = mlflow.pyfunc.load_model(f"models:/capsynth-gan@{CHAMPION}")
    for frame, reason in [
        ({"n": [1, 1, 1], "seed": [0, 1, 2]}, "3 rows in one request, more than 2 (CAPSYNTH_SERVE_MAX_ROWS)"),
        ({"n": [6], "seed": [0]}, "row 0: n must be in 1..5 (CAPSYNTH_SERVE_MAX_SAMPLES), got 6"),
        ({"n": [3, 3], "seed": [0, 1]}, "6 images in one request, more than 5 (CAPSYNTH_SERVE_MAX_SAMPLES)"),
    ]:
        with pytest.raises(MlflowException) as err:
            model.predict(pd.DataFrame(frame))
        assert err.value.error_code == "INVALID_PARAMETER_VALUE" and err.value.message == reason
    assert len(model.predict(pd.DataFrame({"n": [2, 3], "seed": [0, 1]}))) == 5


def test_captioner_pyfunc_takes_bytes_or_base64_and_refuses_a_non_image(store):
    import base64

    import mlflow
    import pandas as pd
    from mlflow.exceptions import MlflowException

    with tracking.stage_run("register", params={}):
        registry.register("captioner", fixtures_models.captioner_dir(store / "captioner"), {"cider": 1.0})
    model = mlflow.pyfunc.load_model("models:/capsynth-captioner@champion")
    png = fixtures_models.png_bytes(4)
    raw = model.predict(pd.DataFrame({"image": [png, fixtures_models.png_bytes(6)]}), params={"beam_size": 1})
    encoded = model.predict(pd.DataFrame({"image": [base64.b64encode(png).decode()]}), params={"beam_size": 1})
    assert list(raw.columns) == ["caption"] and len(raw) == 2
    assert raw["caption"][0] == encoded["caption"][0] and raw["caption"][0]
    assert set(raw["caption"][0].split()) <= set(fixtures_models.WORDS)
    with pytest.raises(MlflowException, match="column 'image', row 1: not an image"):
        model.predict(pd.DataFrame({"image": [png, b"not an image"]}))


def _write_metrics(store: Path, **metrics: dict) -> dict[str, Path]:
    paths = {}
    for kind, values in metrics.items():
        paths[kind] = store / "metrics" / f"{kind}.json"
        paths[kind].parent.mkdir(exist_ok=True)
        paths[kind].write_text(json.dumps(values))
    return paths


def _stage_args(store: Path, metrics: dict[str, Path]) -> list[str]:
    args = ["--report", str(store / "reports" / "register.json")]
    for kind in registry.kinds():
        args += [f"--{kind}", str(store / kind), f"--{kind}-metrics", str(metrics[kind])]
    return args


def test_register_stage_logs_a_pipeline_run_registers_every_model_idempotently(store, capsys):
    fixtures_models.captioner_dir(store / "captioner")
    fixtures_models.scst_dir(store / "scst")
    fixtures_models.vae_dir(store / "vae")
    fixtures_models.gan_dir(store / "gan")
    fixtures_models.imagine_dir(store / "imagine")
    metrics = _write_metrics(store, captioner={"cider": 0.4, "spice": None}, scst={"cider": 0.5},
                             vae={"test_elbo": -500.0}, gan={"inception_score": None},
                             imagine={"object_f1": 0.5})  # no fid or kid yet
    register.main(_stage_args(store, metrics))
    assert "MLFLOW_TRACKING_URI" not in os.environ  # the default store stays the default for the next stage

    report = json.loads((store / "reports" / "register.json").read_text())
    # the fine-tuned captioner is a version of the same registered model: the champion rule picks it (CIDEr-D)
    assert {k: (v["version"], v["alias"]) for k, v in report.items()} == {
        "captioner": ("1", CHAMPION), "scst": ("2", CHAMPION), "vae": ("1", CHAMPION), "gan": ("1", CHALLENGER),
        "imagine": ("1", CHAMPION)}
    assert report["scst"]["name"] == report["captioner"]["name"] == "capsynth-captioner"
    assert "0.5 > 0.4 of champion v1" in report["scst"]["reason"]
    assert "fid or kid" in report["gan"]["reason"]
    client = _client(store)
    [stage] = client.search_runs([client.get_experiment_by_name(tracking.EXPERIMENT).experiment_id],
                                 filter_string=f"tags.`{tracking.STAGE_TAG}` = 'register'")
    parent = client.get_run(stage.data.tags["mlflow.parentRunId"])
    assert parent.data.tags[tracking.STAGE_TAG] == "pipeline" and "dvc_stage" not in parent.data.tags
    assert stage.data.tags["dvc_stage"] == "register" and "git_commit" in stage.data.tags
    assert stage.data.params["gan.key_metric"] == "fid|kid"
    assert stage.data.metrics == {"captioner.cider": 0.4, "scst.cider": 0.5, "vae.test_elbo": -500.0,
                                  "imagine.object_f1": 0.5}
    assert (stage.data.tags["captioner.version"], stage.data.tags["gan.aliases"]) == ("1", CHALLENGER)
    assert stage.info.artifact_uri.startswith((store / "mlartifacts").as_uri())

    register.main(_stage_args(store, metrics))  # same folders: nothing new
    again = json.loads((store / "reports" / "register.json").read_text())
    assert all(not v["new_version"] for v in again.values())
    assert {k: v["version"] for k, v in again.items()} == {k: report[k]["version"] for k in report}
    assert again["captioner"]["aliases"] == [] and again["scst"]["aliases"] == [CHAMPION]
    assert again["gan"]["aliases"] == [CHALLENGER]

    # `capsynth caption` reads the champion from the registry, as from the folder
    image = store / "x.png"
    image.write_bytes(fixtures_models.png_bytes(3))
    capsys.readouterr()
    caption.main([str(image), "--model", "models:/capsynth-captioner@champion", "--beam-size", "1"])
    caption.main([str(image), "--model", str(store / "scst"), "--beam-size", "1"])
    lines = capsys.readouterr().out.splitlines()  # (a caption of these random models may be empty)
    assert len(lines) == 2 and lines[0] == lines[1] and lines[0].startswith(f"{image}\t")


def test_register_families_takes_only_those_folders(store, capsys):
    """A captioning recipe trains no VAE, GAN or imagine model: ``--families captioner scst`` needs only theirs."""
    fixtures_models.captioner_dir(store / "captioner")
    fixtures_models.scst_dir(store / "scst")
    metrics = _write_metrics(store, captioner={"cider": 0.4}, scst={"cider": 0.5})
    args = ["--families", "captioner", "scst", "--report", str(store / "register.json")]
    for kind in ("captioner", "scst"):
        args += [f"--{kind}", str(store / kind), f"--{kind}-metrics", str(metrics[kind])]
    register.main(args)
    report = json.loads((store / "register.json").read_text())
    assert set(report) == {"captioner", "scst"} and report["scst"]["alias"] == CHAMPION
    with pytest.raises(SystemExit):  # the options of a family left out are not taken
        register.main([*args, "--vae", str(store / "vae")])
    assert "unrecognized arguments: --vae" in capsys.readouterr().err


def test_missing_model_folder_is_a_clear_error(store, capsys):
    metrics = _write_metrics(store, captioner={"cider": 0.4}, scst={"cider": 0.5}, vae={"test_elbo": -5.0},
                             gan={"fid": 9.0}, imagine={"object_f1": 0.5})
    fixtures_models.scst_dir(store / "scst")
    fixtures_models.vae_dir(store / "vae")
    fixtures_models.gan_dir(store / "gan")
    fixtures_models.imagine_dir(store / "imagine")
    with pytest.raises(SystemExit) as exit_info:
        register.main(_stage_args(store, metrics))
    assert exit_info.value.code == 2
    assert f"{store / 'captioner'} is not a model folder" in capsys.readouterr().err
    assert not (store / "mlflow.db").exists()  # failed before touching the store


def test_unreachable_tracking_server_fails_fast_naming_the_uri(store, monkeypatch, capsys):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    metrics = _write_metrics(store, captioner={}, scst={}, vae={}, gan={}, imagine={})
    for kind in registry.kinds():
        getattr(fixtures_models, f"{kind}_dir")(store / kind)
    start = time.perf_counter()
    with pytest.raises(SystemExit) as exit_info:
        register.main(_stage_args(store, metrics))
    assert exit_info.value.code == 1 and time.perf_counter() - start < 10
    err = capsys.readouterr().err
    assert f"MLflow tracking server {uri} is unreachable" in err and "Traceback" not in err


def test_no_secret_in_params_or_tags(store):
    with tracking.stage_run("train_x", params={"db.password": "hunter2", "remote": "https://bob:hunter2@host/x",
                                               "lr": 0.1},
                            tags={"api_token": "hunter2", "source": "s3://key:hunter2@bucket/data"}) as run_id:
        pass
    run = _client(store).get_run(run_id)
    logged = {**run.data.params, **run.data.tags}
    assert not any("hunter2" in f"{k}={v}" for k, v in logged.items())
    assert run.data.params["remote"] == "https://***@host/x" and run.data.params["lr"] == "0.1"
    assert run.data.tags["source"] == "s3://***@bucket/data"


def test_stage_run_restores_the_active_experiment(store):
    import mlflow

    mlflow.set_tracking_uri(tracking.tracking_uri(store))
    mine = mlflow.set_experiment("mine").experiment_id
    with tracking.stage_run("train_x", params={}):
        assert mlflow.tracking.fluent._get_experiment_id() != mine
    assert mlflow.tracking.fluent._get_experiment_id() == os.environ["MLFLOW_EXPERIMENT_ID"] == mine
    with mlflow.start_run() as run:  # lands in the caller's experiment, not capsynth's
        assert run.info.experiment_id == mine


def test_prepare_stage_logs_one_run_with_params_counts_and_data_hash(store, repo_root):
    from pipelines import prepare
    from pipelines.config import write_profile_params

    write_profile_params(repo_root / "params.yaml", "smoke", store / "params.yaml")
    for _ in range(2):  # a rerun of the same params: a second stage run under the same pipeline run
        prepare.main(["--params", "params.yaml", "--out", "prepared", "--report", "report.json", "--no-progress"])
    client = _client(store)
    runs = client.search_runs([client.get_experiment_by_name(tracking.EXPERIMENT).experiment_id])
    [parent] = [r for r in runs if r.data.tags[tracking.STAGE_TAG] == "pipeline"]
    stages = [r for r in runs if r.data.tags[tracking.STAGE_TAG] == "prepare"]
    assert len(stages) == 2 and {r.data.tags["mlflow.parentRunId"] for r in stages} == {parent.info.run_id}
    run = stages[0]
    assert run.data.params["synthetic.num_images"] == "60"
    assert run.data.metrics["images_kept"] == 60.0
    assert run.data.tags["data_hash"] == _sha16(PreparedDir(store / "prepared").images)
    assert [a.path for a in client.list_artifacts(run.info.run_id, "report")] == ["report/report.json"]


def _sha16(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
