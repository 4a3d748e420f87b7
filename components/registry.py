"""The model registry: model folders as MLflow pyfunc models, and the champion rule.

The second MLflow adapter, beside :mod:`components.tracking` (whose store and
run it uses): only these two modules import MLflow. The ``register`` stage
calls :func:`register` inside its stage run.

Registered models (names fixed by the pipeline contract), all pyfunc:

``capsynth-captioner``
    input: a DataFrame with a column ``image`` (binary: PNG/JPEG/... bytes; over
    HTTP, base64 strings, which MLflow's scoring server decodes; in-process, a
    base64 string works too); param ``beam_size`` (default 3). Output: a
    DataFrame with a column ``caption``, one row per image.
``capsynth-vae``, ``capsynth-gan``
    input: a DataFrame with columns ``n`` and ``seed`` (one request per row,
    ``n >= 1``); output: one row per image, columns ``seed``, ``index`` and
    ``image``, a base64 PNG string (the same seed gives the same images as
    ``capsynth sample``).

A request outside :class:`components.serving.ServingLimits` (rows, image bytes
and pixels, ``beam_size``, images asked for; read from ``CAPSYNTH_SERVE_*``
when the model loads) or with an image that cannot be decoded raises
``MlflowException.invalid_parameter_value`` with a one-line reason:
``mlflow models serve`` answers 400 and keeps serving.

Every version carries tags: ``capsynth.weights_sha256`` (a hash of the model
folder's files: registering the same folder again finds that version instead
of adding one), ``capsynth.key_metric`` and ``capsynth.key_metric_value``.

Aliases: ``champion`` moves to a new version only when its key metric strictly
beats the current champion's (captioner CIDEr-D and VAE test ELBO: higher is
better; GAN FID, else KID: lower is better); otherwise the new version gets
``challenger``. A version without its key metric is a challenger, with the
reason in the result.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import importlib
import io
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
from PIL import Image

from components.serving import BadInput, ServingLimits

CHAMPION = "champion"
CHALLENGER = "challenger"
WEIGHTS_TAG = "capsynth.weights_sha256"
METRIC_TAG = "capsynth.key_metric"
METRIC_VALUE_TAG = "capsynth.key_metric_value"
MODEL_ARTIFACT = "model_dir"  # the model folder inside the MLflow model's artifacts
DEFAULT_BEAM_SIZE = 3  # the captioner's, when a request gives no beam_size
# what the serving process needs; logged (pinned to this environment) instead of MLflow's slow inference
REQUIREMENTS = ("mlflow", "torch", "torchvision", "numpy", "pandas", "pillow")


def png_bytes(image: np.ndarray | Image.Image) -> bytes:
    """PNG-encode one uint8 ``(H, W, 3)`` array or PIL image."""
    buf = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image, mode="RGB")).save(buf, format="PNG")
    return buf.getvalue()


@contextlib.contextmanager
def bad_request(where: str = "") -> Iterator[None]:
    """Turn :class:`BadInput` into the error ``mlflow models serve`` answers with 400 (its reason after ``where``)."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except BadInput as err:
        raise MlflowException.invalid_parameter_value(f"{where}{err}") from err


class CaptionerModel(mlflow.pyfunc.PythonModel):
    """pyfunc of a caption model folder: images in, captions out (see the module doc)."""

    def load_context(self, context) -> None:
        from components.captioning.inference import Captioner

        self._limits = ServingLimits.from_env()
        self._limits.set_pil_limit()
        self._captioner = Captioner(context.artifacts[MODEL_ARTIFACT], beam_size=DEFAULT_BEAM_SIZE)

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        beam_size = int((params or {}).get("beam_size", DEFAULT_BEAM_SIZE))
        with bad_request():
            self._limits.check_rows(len(model_input))
            self._limits.check_beam_size(beam_size)
        images = []
        for row, value in enumerate(model_input["image"]):
            with bad_request(f"column 'image', row {row}: "):
                images.append(self._limits.open_image(self._limits.image_bytes(value), self._captioner.input_size))
        return pd.DataFrame({"caption": self._captioner(images, beam_size=beam_size)})


class GeneratorModel(mlflow.pyfunc.PythonModel):
    """pyfunc of a VAE or GAN folder: ``(n, seed)`` rows in, base64 PNG images out."""

    def load_context(self, context) -> None:
        from components.generative.io import load_generator

        self._limits = ServingLimits.from_env()
        self._sampler, _ = load_generator(context.artifacts[MODEL_ARTIFACT])

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        from components.generative.sampling import sample

        with bad_request():
            self._limits.check_samples([int(n) for n in model_input["n"]])
        rows = []
        for n, seed in zip(model_input["n"], model_input["seed"]):
            images = sample(self._sampler, int(n), int(seed))  # (n, S, S, 3) uint8
            rows += [{"seed": int(seed), "index": i, "image": base64.b64encode(png_bytes(img)).decode("ascii")}
                     for i, img in enumerate(images)]
        return pd.DataFrame(rows, columns=["seed", "index", "image"])


def _example_png() -> bytes:
    """A small synthetic scene as PNG: the captioner's input example (seeded, no data needed)."""
    from components.data.synthetic import render_scene, sample_scene

    rng = np.random.default_rng(0)
    return png_bytes(render_scene(sample_scene(rng), image_size=64, rng=rng))


CAPTION_SIGNATURE = ModelSignature(inputs=Schema([ColSpec("binary", "image")]),
                                   outputs=Schema([ColSpec("string", "caption")]),
                                   params=ParamSchema([ParamSpec("beam_size", "long", DEFAULT_BEAM_SIZE)]))
SAMPLES_SIGNATURE = ModelSignature(inputs=Schema([ColSpec("long", "n"), ColSpec("long", "seed")]),
                                   outputs=Schema([ColSpec("long", "seed"), ColSpec("long", "index"),
                                                   ColSpec("string", "image")]))


def _caption_example() -> pd.DataFrame:
    return pd.DataFrame({"image": [_example_png()]})


def _samples_example() -> pd.DataFrame:
    return pd.DataFrame({"n": [2], "seed": [0]})


@dataclasses.dataclass(frozen=True)
class ModelKind:
    """How one model family's folders are registered and judged (a family names its kind: ``Family.registration``).

    Attributes:
        registered_name: The registry name.
        python_model: Its pyfunc class.
        metrics: Key metric names, the first present one counts (GAN: ``fid``, else ``kid``).
        higher_is_better: Direction of the key metric.
        signature: The pyfunc's input/output (and params) schema.
        input_example: Builds the example logged with every version.
        folder_family: The ``family`` its model folders declare (:mod:`components.model_folder`);
            empty: the family's own name. The SCST-fine-tuned captioner writes captioner folders.
    """

    registered_name: str
    python_model: type[mlflow.pyfunc.PythonModel]
    metrics: tuple[str, ...]
    higher_is_better: bool
    signature: ModelSignature
    input_example: Callable[[], pd.DataFrame]
    folder_family: str = ""


CAPTIONER = ModelKind("capsynth-captioner", CaptionerModel, ("cider",), True, CAPTION_SIGNATURE, _caption_example,
                      folder_family="captioner")
VAE = ModelKind("capsynth-vae", GeneratorModel, ("test_elbo",), True, SAMPLES_SIGNATURE, _samples_example)
GAN = ModelKind("capsynth-gan", GeneratorModel, ("fid", "kid"), False, SAMPLES_SIGNATURE, _samples_example)


def kinds() -> dict[str, ModelKind]:
    """Family name -> its :class:`ModelKind`, for every registered family that registers models."""
    from components import families

    found = {}
    for name in families.names():
        family = families.get(name)
        if family.registration is not None:
            module, _, attr = family.registration.partition(":")
            found[name] = getattr(importlib.import_module(module), attr)
    return found


# ---------------------------------------------------------------- the champion rule (no MLflow)

@dataclasses.dataclass(frozen=True)
class KeyMetric:
    name: str
    value: float


@dataclasses.dataclass(frozen=True)
class Decision:
    alias: str  # CHAMPION or CHALLENGER
    reason: str


def folder_sha256(path: str | os.PathLike) -> str:
    """SHA-256 over a folder's files (relative paths and contents, in sorted order)."""
    root = Path(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(file.relative_to(root).as_posix().encode() + b"\0")
        digest.update(file.read_bytes())
    return digest.hexdigest()


def key_metric(metrics: Mapping[str, Any], names: tuple[str, ...]) -> KeyMetric | None:
    """The first of ``names`` with a finite number in ``metrics`` (None: none has one)."""
    for name in names:
        value = metrics.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return KeyMetric(name, float(value))
    return None


def decide(new: KeyMetric | None, champion: KeyMetric | None, *, names: tuple[str, ...],
           higher_is_better: bool, champion_version: str | None = None) -> Decision:
    """Champion or challenger for a new version, and why.

    Args:
        new: The new version's key metric (None: not available).
        champion: The current champion's, None when there is no champion or
            it has no recorded metric.
        names: The kind's key metric names (for the messages).
        higher_is_better: Direction of the metric.
        champion_version: The current champion's version (None: there is none).
    """
    if new is None:
        return Decision(CHALLENGER, f"no key metric ({' or '.join(names)}) in the metrics file")
    if champion_version is None:
        return Decision(CHAMPION, f"first champion ({new.name} {new.value:.6g})")
    if champion is None:
        return Decision(CHAMPION, f"champion v{champion_version} has no recorded key metric")
    if champion.name != new.name:
        return Decision(CHALLENGER, f"not comparable: {new.name} here, {champion.name} for champion "
                                    f"v{champion_version}")
    better = new.value > champion.value if higher_is_better else new.value < champion.value
    sign = (">" if higher_is_better else "<") if better else ("<=" if higher_is_better else ">=")
    alias = CHAMPION if better else CHALLENGER
    return Decision(alias, f"{new.name} {new.value:.6g} {sign} {champion.value:.6g} of champion "
                           f"v{champion_version}")


# ---------------------------------------------------------------- registry calls

@dataclasses.dataclass(frozen=True)
class Registration:
    """What :func:`register` did for one model (``reports/register.json`` rows)."""

    name: str
    version: str
    alias: str | None  # the alias given now; None when an existing version was found
    aliases: tuple[str, ...]  # the version's aliases afterwards
    reason: str
    new_version: bool
    key_metric: str | None
    key_metric_value: float | None
    weights_sha256: str


def _version_metric(version) -> KeyMetric | None:
    try:
        return KeyMetric(version.tags[METRIC_TAG], float(version.tags[METRIC_VALUE_TAG]))
    except (KeyError, ValueError):
        return None


def _champion(client, name: str):
    """The version holding ``champion``, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def find_version(client, name: str, weights_sha256: str):
    """The version of ``name`` registered from the same weights, or None."""
    found = client.search_model_versions(f"name = '{name}' and tags.`{WEIGHTS_TAG}` = '{weights_sha256}'")
    return min(found, key=lambda v: int(v.version)) if found else None


def check_model_dir(family: str, model_dir: str | os.PathLike) -> Path:
    """``model_dir`` as a Path, if it is a model folder of family ``family`` (:mod:`components.model_folder`).

    Raises:
        FileNotFoundError: It is not, naming the stage that writes it.
        ValueError: A folder of another family or format.
    """
    from components import families
    from components.model_folder import read_model_folder

    model_dir = Path(model_dir)
    kind = kinds().get(family)
    try:
        read_model_folder(model_dir, family=(kind.folder_family if kind else "") or family)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{err} (run {families.stage_of(family)})") from None
    return model_dir


@contextlib.contextmanager
def _library_code() -> Iterator[Path]:
    """A clean copy of the ``components`` package (no ``__pycache__``) to ship with a model.

    The serving process imports the pyfunc classes from it, whatever is
    installed there (``mlflow models serve --env-manager local``).
    """
    with tempfile.TemporaryDirectory(prefix="capsynth-code-") as tmp:
        yield shutil.copytree(Path(__file__).resolve().parent, Path(tmp) / "components",
                              ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def _requirements() -> list[str]:
    return [f"{pkg}=={metadata.version(pkg)}" for pkg in REQUIREMENTS]


def register(family: str, model_dir: str | os.PathLike, metrics: Mapping[str, Any]) -> Registration:
    """Log ``model_dir`` as a pyfunc model in the active run, register it, set its alias.

    Idempotent: a folder whose hash is already a version of the model is not
    logged again; that version is reported with its aliases.

    Args:
        family: A model family that registers (a key of :func:`kinds`).
        model_dir: The model folder (written by a train stage).
        metrics: The evaluation metrics of that model (its key metric may be absent).

    Raises:
        FileNotFoundError: ``model_dir`` has no ``config.json``.
    """
    spec = kinds()[family]
    model_dir = check_model_dir(family, model_dir)
    client = mlflow.MlflowClient()
    digest = folder_sha256(model_dir)
    metric = key_metric(metrics, spec.metrics)
    existing = find_version(client, spec.registered_name, digest)
    if existing is not None:
        return Registration(spec.registered_name, str(existing.version), None,
                            _aliases(client, spec.registered_name, existing.version),
                            "already registered (same weights sha256)", False, *_metric_fields(metric), digest)

    with _library_code() as code:
        info = mlflow.pyfunc.log_model(
            name=family, python_model=spec.python_model(), artifacts={MODEL_ARTIFACT: str(model_dir)},
            code_paths=[str(code)], signature=spec.signature, input_example=spec.input_example(),
            pip_requirements=_requirements(),
        )
    tags = {WEIGHTS_TAG: digest}
    if metric is not None:
        tags |= {METRIC_TAG: metric.name, METRIC_VALUE_TAG: repr(metric.value)}
    version = mlflow.register_model(info.model_uri, spec.registered_name, tags=tags).version
    champion = _champion(client, spec.registered_name)
    decision = decide(metric, _version_metric(champion) if champion else None, names=spec.metrics,
                      higher_is_better=spec.higher_is_better,
                      champion_version=str(champion.version) if champion else None)
    client.set_registered_model_alias(spec.registered_name, decision.alias, version)
    return Registration(spec.registered_name, str(version), decision.alias,
                        _aliases(client, spec.registered_name, version), decision.reason, True,
                        *_metric_fields(metric), digest)


def _aliases(client, name: str, version: str | int) -> tuple[str, ...]:
    """A version's aliases (searches do not return them)."""
    return tuple(sorted(client.get_model_version(name, str(version)).aliases))


def _metric_fields(metric: KeyMetric | None) -> tuple[str | None, float | None]:
    return (metric.name, metric.value) if metric else (None, None)
