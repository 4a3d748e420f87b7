"""A model family added the way README §Adding a model family says, run through the real stages.

The toy family (``extra_components/toy``, one learnable colour) is a package
like the built-in ones: with its folder on ``components.__path__`` the
registry finds it next to the three built-in families, and its ``train_toy``
group is added to the smoke params; nothing else changes. Then the generic
train stage, the evaluate stage and the register stage run it with no code of
theirs changed: model folder, metrics, curves, one MLflow run per stage, a
registered champion.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import torch
from ruamel.yaml import YAML
from smoke_data import prepare_smoke

import components
from components import families
from components.model_folder import read_model_folder
from components.generative.data import image_splits, load_images
from pipelines import evaluate, register, train
from pipelines.config import load_params, write_profile_params

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TOY_PARAMS = {"model": {}, "train": {"epochs": 3, "lr": 0.1, "image_size": 16, "threads_per_worker": 1},
              "scaling": {"num_workers": 1, "use_gpu": False, "max_failures": 0}}


@pytest.fixture
def toy(tmp_path_factory, monkeypatch, tmp_path):
    """The smoke data, the toy family registered, and a params file with its group."""
    import ray.cloudpickle

    work, _ = prepare_smoke(tmp_path_factory, "toy")
    monkeypatch.chdir(work)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    params_file = tmp_path / "params.yaml"
    write_profile_params(REPO / "params.yaml", "smoke", params_file)
    yaml = YAML()
    data = yaml.load(params_file)
    data["train_toy"] = TOY_PARAMS
    yaml.dump(data, params_file)
    # as if components/toy/ were in the tree: the registry discovers it like components/generative
    built_in = families.names()
    monkeypatch.setattr(components, "__path__", [*components.__path__, str(HERE / "extra_components")])
    assert families.names() == [*built_in, "toy"]
    toy = importlib.import_module("components.toy")
    ray.cloudpickle.register_pickle_by_value(toy)  # workers do not have the path: the loop travels by value
    yield work, params_file
    ray.cloudpickle.unregister_pickle_by_value(toy)


def test_a_new_family_trains_evaluates_and_registers_through_the_generic_stages(toy, ray_session, tmp_path):
    work, params_file = toy
    params = load_params(params_file)
    assert params.train_toy.train.epochs == 3  # the registry made the group part of params.yaml's schema
    family = families.get("toy")
    outputs = {name: tmp_path / path for name, path in family.default_outputs().items()}
    metrics = train.run(family, params.train_toy, inputs={"prepared": Path("data/prepared")}, outputs=outputs,
                        storage=tmp_path / "ray_results", params_file=str(params_file))

    # the loop ran on Ray Train and moved the colour towards the training images' mean
    mean = load_images(image_splits(Path("data/prepared"))["train"], size=16).float().mean(dim=(0, 2, 3)) / 255
    colour = read_model_folder(outputs["model"]).state_dict("colour")["rgb"]
    assert metrics["epochs_run"] == 3 and torch.linalg.norm(colour - mean) < torch.linalg.norm(mean)
    assert json.loads(outputs["metrics"].read_text()) == metrics
    assert outputs["plots"].read_text().splitlines()[0] == "epoch,mse"
    assert len(outputs["plots"].read_text().splitlines()) == 4

    # evaluate: the toy's metrics file, beside whatever else the registry holds
    evaluated = evaluate.run(params.evaluate, prepared=Path("data/prepared"),
                             outputs={"toy": {"model": outputs["model"]}},
                             metrics_paths={"toy": tmp_path / "metrics" / "toy.json"},
                             report_path=tmp_path / "reports" / "index.html")
    assert 0 < evaluated["toy"]["test_mse"] < 1
    assert "metrics/toy.json" in (tmp_path / "reports" / "index.html").read_text()

    # register: a first version, champion by its key metric
    done = register.run({"toy": outputs["model"]}, {"toy": tmp_path / "metrics" / "toy.json"},
                        report=tmp_path / "reports" / "register.json", params_file=str(params_file))
    assert done["toy"]["name"] == "capsynth-toy" and done["toy"]["alias"] == "champion"
    assert done["toy"]["key_metric"] == "test_mse"

    # one MLflow run per stage, the toy's epochs logged once each
    from mlflow import MlflowClient

    client = MlflowClient()
    experiment = client.get_experiment_by_name("capsynth").experiment_id
    runs = {r.data.tags["capsynth.stage"]: r for r in client.search_runs([experiment])}
    assert {"train_toy", "evaluate", "register"} <= set(runs)
    steps = [m.step for m in client.get_metric_history(runs["train_toy"].info.run_id, "mse")]
    assert sorted(steps) == [0, 1, 2]
