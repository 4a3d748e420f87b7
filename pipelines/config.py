"""Typed, frozen configuration of every stage, loaded strictly from ``params.yaml``.

``params.yaml`` is grouped by stage; :func:`params_class` has one field per
group (one ``train_<name>`` group per registered model family, of the
family's own config class).
Every key is required (the defaults live in ``params.yaml``, stated once), an
unknown key, a missing key or a wrong type is a ``ConfigError`` naming the
dotted key and the file. ``dvc exp run -S prepare.seed=3`` edits the same file,
so a typo there fails the same way.

Profiles (``profiles/<name>.yaml``) hold overrides of existing keys only, e.g.
the tiny ``smoke`` profile used by the tests and CI; see :func:`set_args`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import Any, Literal

from ruamel.yaml import YAML

from components import families
from components.config import ConfigError, build, deep_merge, flatten
from components.data.sources import AnnotationSource
from components.train.config import Precision

PROFILES_DIR = Path(__file__).resolve().parent.parent / "profiles"


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """The offline dataset the pipeline generates itself (COCO format)."""

    num_images: int
    image_size: int
    captions_per_image: int
    max_objects: int
    val_fraction: float
    test_fraction: float


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
    """``prepare`` stage: dataset → images/captions tables, vocab, report."""

    dataset: Literal["synthetic", "coco", "flickr8k", "flickr30k", "karpathy", "pascal50s"]
    seed: int
    on_bad_image: Literal["skip", "fail"]
    min_word_count: int
    max_caption_length: int
    num_workers: int
    tokenizer: Literal["ptb", "simple"]
    synthetic: SyntheticConfig
    sources: tuple[AnnotationSource, ...]
    split_file: str

    def __post_init__(self) -> None:
        if self.dataset != "synthetic" and not self.sources:
            raise ConfigError(
                f"prepare.sources is empty but prepare.dataset is '{self.dataset}': "
                "list the annotation files as {file, images_dir, split}"
            )
        if self.min_word_count < 1 or self.max_caption_length < 1:
            raise ConfigError("prepare.min_word_count and prepare.max_caption_length must be >= 1")


@dataclasses.dataclass(frozen=True)
class FeaturesConfig:
    """``features`` stage: images table → CNN grid + pooled features (Parquet shards)."""

    backbone: Literal["resnet18", "resnet50", "resnet101", "resnet152", "vgg16", "inception_v3"]
    weights: Literal["random", "imagenet", "path"]
    weights_path: str
    seed: int
    input_size: int
    stage: int
    grid_size: int
    batch_size: int
    dtype: Literal["float16", "float32"]
    num_actors: int
    threads_per_actor: int
    num_decode_tasks: int
    device: Literal["auto", "cpu", "cuda"]
    precision: Precision
    channels_last: bool

    def __post_init__(self) -> None:
        if self.weights == "path" and not self.weights_path:
            raise ConfigError("features.weights is 'path' but features.weights_path is empty")
        if self.input_size != 0 and self.input_size < 32:
            raise ConfigError(f"features.input_size must be 0 (native) or >= 32, got {self.input_size}")
        if not 1 <= self.stage <= 4:
            raise ConfigError(f"features.stage must be 1 to 4 (output stride 4 to 32), got {self.stage}")
        for key in ("grid_size", "batch_size", "num_actors", "threads_per_actor", "num_decode_tasks"):
            if getattr(self, key) < 1:
                raise ConfigError(f"features.{key} must be >= 1, got {getattr(self, key)}")


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """``evaluate`` stage: predictions and model folders → DVC metrics and ``reports/index.html``."""

    split: Literal["test", "val"]
    spice: bool
    num_fake: int
    feature_network: Literal["auto", "inception", "in_domain"]
    inception_weights: str
    feature_size: int
    feature_seed: int
    kid_subsets: int
    kid_subset_size: int
    pr_neighbours: int
    iw_samples: int
    seed: int
    report_images: int
    imagine_samples: int  # images per caption, each read back by the captioner
    imagine_captions: int  # captions judged (the first of each image of the split); 0: all

    def __post_init__(self) -> None:
        for key in ("num_fake", "feature_size", "kid_subsets", "kid_subset_size", "pr_neighbours"):
            if getattr(self, key) < 1:
                raise ConfigError(f"evaluate.{key} must be >= 1, got {getattr(self, key)}")
        if self.num_fake <= self.pr_neighbours:
            raise ConfigError(f"evaluate.num_fake ({self.num_fake}) must exceed evaluate.pr_neighbours "
                              f"({self.pr_neighbours})")
        if self.iw_samples < 0 or self.report_images < 0 or self.imagine_captions < 0:
            raise ConfigError("evaluate.iw_samples, evaluate.report_images and evaluate.imagine_captions "
                              "must be >= 0")
        if self.imagine_samples < 2:
            raise ConfigError(f"evaluate.imagine_samples must be >= 2 (the diversity of one caption's images), "
                              f"got {self.imagine_samples}")


@dataclasses.dataclass(frozen=True)
class Pascal50sConfig:
    """``pascal50s`` stage: caption metrics against Pascal-50S's human judgements (README §Evaluation)."""

    dir: str  # the folder of pair_pascal.mat and consensus_pascal.mat (a DVC dep); neither file there: skipped
    num_refs: int  # references per pair, drawn from its 48; 0: all
    seed: int  # seed of the references' draw

    def __post_init__(self) -> None:
        if self.num_refs < 0:
            raise ConfigError(f"pascal50s.num_refs must be >= 0 (0: all of a pair's references), got {self.num_refs}")
        if not self.dir:
            raise ConfigError("pascal50s.dir must name a folder (a dependency of the pascal50s stage in dvc.yaml); "
                              "the default datasets/pascal50s is skipped while it holds no .mat file")


@dataclasses.dataclass(frozen=True)
class SearchDim:
    """One dimension of a sweep's search space: ``choice`` of ``values``, or ``uniform`` /
    ``loguniform`` between ``low`` and ``high`` (the keys a type does not use may be left out)."""

    type: Literal["choice", "uniform", "loguniform"]
    values: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None

    def __post_init__(self) -> None:
        if self.type == "choice" and not self.values:
            raise ConfigError("a sweep 'choice' dimension needs a non-empty 'values' list")
        if self.type != "choice" and (self.low is None or self.high is None or not self.low < self.high
                                      or (self.type == "loguniform" and self.low <= 0)):
            raise ConfigError(f"a sweep '{self.type}' dimension needs 0 < low < high (low > 0 for loguniform), "
                              f"got low={self.low}, high={self.high}")


@dataclasses.dataclass(frozen=True)
class SweepFamilyConfig:
    """A Ray Tune sweep of one training stage (``capsynth sweep <family>``)."""

    num_samples: int
    metric: str  # a per-epoch metric the family reports, e.g. val_cider
    mode: Literal["max", "min"]
    max_concurrent: int  # 0: as many trials as the cluster's CPUs (GPUs) hold at once
    grace_period: int  # ASHA: epochs before a trial may be stopped
    reduction_factor: int  # ASHA: keep 1/reduction_factor of the trials at each rung
    seed: int
    space: dict[str, SearchDim]  # dotted key inside the stage's group -> dimension

    def __post_init__(self) -> None:
        for key in ("num_samples", "grace_period"):
            if getattr(self, key) < 1:
                raise ConfigError(f"sweep.*.{key} must be >= 1, got {getattr(self, key)}")
        if self.max_concurrent < 0 or self.reduction_factor < 2:
            raise ConfigError("sweep.*.max_concurrent must be >= 0 and sweep.*.reduction_factor >= 2")
        if not self.space:
            raise ConfigError("sweep.*.space is empty: name at least one param to search")


@functools.lru_cache(maxsize=8)
def _params_class(registered: tuple[tuple[str, type], ...]) -> type:
    groups = [("prepare", PrepareConfig), ("features", FeaturesConfig),
              *((families.stage_of(name), params) for name, params in registered),
              ("evaluate", EvaluateConfig),
              ("pascal50s", Pascal50sConfig),
              ("sweep", dict[str, SweepFamilyConfig])]  # family -> its search (``capsynth sweep <family>``)
    return dataclasses.make_dataclass("Params", groups, frozen=True, namespace={
        "__doc__": "All of ``params.yaml``: the fixed groups, and the training group of each model family "
                   "(``train_<name>`` or its entry's stage)."})


def params_class() -> type:
    """The class of ``params.yaml`` for the model families registered now (:mod:`components.families`).

    Its fields: ``prepare``, ``features``, one ``train_<name>`` per family (of
    the family's ``config`` class), ``evaluate``, ``pascal50s`` and ``sweep``
    (family name -> its search).
    """
    return _params_class(tuple((name, families.config_of(name)) for name in families.names()))


def build_params(data: Any, *, source: str) -> Any:
    """``params.yaml`` content as a :func:`params_class` instance, strictly (errors name the key and ``source``)."""
    params = build(params_class(), data, source=source)
    unknown = sorted(set(params.sweep) - set(families.names()))
    if unknown:
        raise ConfigError(f"{source}: unknown key 'sweep.{unknown[0]}': not a model family "
                          f"(known: {', '.join(families.names())})")
    return params


def __getattr__(name: str) -> Any:
    if name == "Params":  # ``config.Params``: the class for the families registered now
        return params_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _read_yaml(path: str | os.PathLike) -> Any:
    # ruamel (YAML 1.2) is what DVC uses, so `1e-3` is a float here as in DVC.
    with open(path) as f:
        return YAML(typ="safe", pure=True).load(f)


def load_params(path: str | os.PathLike = "params.yaml", *, profile: str | None = None) -> Any:
    """Load and validate ``params.yaml``, optionally overlaid with a profile.

    Args:
        path: The params file.
        profile: Name of ``profiles/<profile>.yaml`` to overlay, or None.

    Raises:
        ConfigError: naming the key and the file, for any invalid content.
        FileNotFoundError: when ``path`` does not exist.
    """
    data = _read_yaml(path)
    if data is None:
        raise ConfigError(f"{path}: file is empty")
    source = str(path)
    if profile:
        overlay_path = PROFILES_DIR / f"{profile}.yaml"
        if not overlay_path.exists():
            known = sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))
            raise ConfigError(f"unknown profile '{profile}' (known: {', '.join(known)})")
        data = deep_merge(data, _read_yaml(overlay_path) or {}, source=str(overlay_path))
        source = f"{path} + {overlay_path}"
    return build_params(data, source=source)


def profile_overrides(profile: str) -> dict[str, Any]:
    """The profile's overrides as flat dotted keys, e.g. ``{"prepare.seed": 1}``."""
    path = PROFILES_DIR / f"{profile}.yaml"
    if not path.exists():
        raise ConfigError(f"unknown profile '{profile}': no file {path}")
    return flatten(_read_yaml(path) or {})


def set_args(profile: str) -> list[str]:
    """The profile as ``dvc exp run`` arguments: ``["-S", "prepare.seed=1", ...]``."""
    args: list[str] = []
    for key, value in profile_overrides(profile).items():
        args += ["-S", set_arg(key, value)]
    return args


def set_arg(key: str, value: Any) -> str:
    """One ``dvc exp run -S`` value, ``key=value``, in the Hydra override grammar DVC parses it with.

    Lists and mappings nest (``prepare.sources=[{file:'/data/a.json',images_dir:'/data/a',split:'train'}]``);
    strings inside them are quoted. Nothing adds a space, so the arguments survive the shell's word
    splitting of ``dvc exp run $(capsynth profile NAME)`` as long as the values hold none.
    """
    return f"{key}={_override_value(value, nested=False)}"


def _override_value(value: Any, *, nested: bool) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_override_value(v, nested=True) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_override_value(v, nested=True)}" for k, v in value.items()) + "}"
    if isinstance(value, str) and nested:
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return str(value)


def write_profile_params(params_path: str | os.PathLike, profile: str, out: str | os.PathLike) -> None:
    """Write ``params_path`` overlaid with ``profile`` to ``out`` (validated first).

    Used by tests and ``capsynth profile --write`` to build a self-contained
    params file for a throwaway copy of the repo.
    """
    data = deep_merge(_read_yaml(params_path), _read_yaml(PROFILES_DIR / f"{profile}.yaml") or {},
                      source=profile)
    build_params(data, source=f"{params_path} + profile {profile}")
    yaml = YAML()
    yaml.default_flow_style = False
    with open(out, "w") as f:
        yaml.dump(data, f)
