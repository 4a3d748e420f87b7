"""The conditional generator in the MLflow registry: captions in, base64 PNGs out.

Request rows ``{caption, n, seed}``; response rows ``{caption, index, image}``,
``n`` per request row. A bad request (an empty caption, words outside the
vocabulary, a caption too long, ``n`` outside ``1..64``, more rows than
``CAPSYNTH_SERVE_MAX_ROWS``, 64 by default: :mod:`components.serving`) is an
``INVALID_PARAMETER_VALUE`` error: ``mlflow models serve`` answers 400 with
the message. The champion is the version with the best caption
consistency (``object_f1`` of ``metrics/imagine.json``).
"""

from __future__ import annotations

import base64
from typing import Any

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from components.registry import MODEL_ARTIFACT, ModelKind, bad_request, png_bytes
from components.serving import ServingLimits


class ImagineModel(mlflow.pyfunc.PythonModel):
    """pyfunc of an ``imagine`` model folder."""

    def load_context(self, context) -> None:
        from components.imagine.io import Imaginer

        self._limits = ServingLimits.from_env()
        self._imaginer = Imaginer(context.artifacts[MODEL_ARTIFACT])

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        from mlflow.exceptions import MlflowException

        from components.imagine.io import CaptionError

        with bad_request():
            self._limits.check_rows(len(model_input))
        rows = []
        for caption, n, seed in zip(model_input["caption"], model_input["n"], model_input["seed"]):
            try:
                images = self._imaginer([str(caption)], n=int(n), seed=int(seed))[0].numpy()  # (n, S, S, 3)
            except (CaptionError, ValueError) as err:  # a bad request, not a server error
                raise MlflowException.invalid_parameter_value(str(err)) from err
            rows += [{"caption": caption, "index": i, "image": base64.b64encode(png_bytes(im)).decode("ascii")}
                     for i, im in enumerate(images)]
        return pd.DataFrame(rows, columns=["caption", "index", "image"])


SIGNATURE = ModelSignature(inputs=Schema([ColSpec("string", "caption"), ColSpec("long", "n"),
                                          ColSpec("long", "seed")]),
                           outputs=Schema([ColSpec("string", "caption"), ColSpec("long", "index"),
                                           ColSpec("string", "image")]))


def _example() -> pd.DataFrame:
    return pd.DataFrame({"caption": ["a small red circle"], "n": [2], "seed": [0]})


KIND = ModelKind("capsynth-imagine", ImagineModel, ("object_f1",), True, SIGNATURE, _example)

__all__ = ["KIND", "ImagineModel", "SIGNATURE"]
