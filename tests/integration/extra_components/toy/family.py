"""The toy family's spec: a loop on a ``Session``, an export, an evaluation, a registry kind.

The model is the RGB colour closest (mean squared error) to every pixel of the
training images; the loop fits it with Adam, one step per epoch.
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd
import torch
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from components.data.folders import PreparedDir
from components.generative.data import image_splits, load_images
from components.io import atomic_dir, short_sha256
from components.model_folder import read_model_folder, write_model_folder
from components.registry import ModelKind
from components.train.family import Family
from components.train.session import RaySession


def _pixels(paths: list[str], size: int) -> torch.Tensor:
    return load_images(paths, size=size).permute(0, 2, 3, 1).reshape(-1, 3).float() / 255  # (P, 3)


def loop(config: dict) -> None:  # train_loop_per_worker: one Adam step on the colour per epoch
    session, cfg = RaySession(), config["train"]
    pixels = _pixels(config["train_paths"], cfg.image_size)
    colour = torch.zeros(3, requires_grad=True)
    opt = torch.optim.Adam([colour], lr=cfg.lr)
    state = session.restore() or {"epoch": -1, "history": [], "colour": colour.detach().clone()}
    colour.data.copy_(state["colour"])
    for epoch in range(state["epoch"] + 1, cfg.epochs):
        loss = ((pixels - colour) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        state["colour"] = colour.detach().clone()
        session.end_epoch(state, {"epoch": epoch, "mse": float(loss)}, checkpoint=lambda: dict(state))


def export(cfg: Any, state: dict, trained) -> dict:
    with atomic_dir(trained.outputs["model"]) as tmp:  # the one model folder format: parts, config, extra
        write_model_folder(tmp, family="toy", config={}, parts={"colour": {"rgb": state["colour"]}},
                           extra={"ray_run": trained.run_name})
    return {"epochs_run": len(state["history"]), "train_mse": state["history"][-1]["mse"]}


def evaluate(evaluation) -> tuple[dict, list]:
    colour = read_model_folder(evaluation.outputs["model"]).state_dict("colour")["rgb"]
    paths = image_splits(evaluation.prepared)[evaluation.cfg.split]
    return {"test_mse": float(((_pixels(paths, 16) - colour) ** 2).mean())}, []


class ToyModel(mlflow.pyfunc.PythonModel):  # serving: the colour, whatever is asked
    def load_context(self, context) -> None:
        self.colour = read_model_folder(context.artifacts["model_dir"]).state_dict("colour")["rgb"]

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return pd.DataFrame([self.colour.tolist()] * len(model_input), columns=["r", "g", "b"])


KIND = ModelKind("capsynth-toy", ToyModel, ("test_mse",), False,
                 ModelSignature(inputs=Schema([ColSpec("long", "n")]),
                                outputs=Schema([ColSpec("double", c) for c in "rgb"])),
                 lambda: pd.DataFrame({"n": [1]}))
TOY = Family(name="toy", loop=loop, inputs={"prepared": "data/prepared"}, outputs={},
             loop_config=lambda cfg, inputs: {"train_paths": image_splits(inputs["prepared"])["train"],
                                              "train": cfg.train},
             data_version=lambda inputs: {"data_hash": short_sha256(PreparedDir(inputs["prepared"]).images)},
             export=export, curve_keys=("epoch", "mse"), evaluate="components.toy.family:evaluate",
             eval_outputs=("model",), registration="components.toy.family:KIND")
