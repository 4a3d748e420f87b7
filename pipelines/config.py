"""Typed, frozen configuration of every stage, loaded strictly from ``params.yaml``.

``params.yaml`` is grouped by stage; :class:`Params` has one field per group.
Every key is required (the defaults live in ``params.yaml``, stated once), an
unknown key, a missing key or a wrong type is a ``ConfigError`` naming the
dotted key and the file. ``dvc exp run -S prepare.seed=3`` edits the same file,
so a typo there fails the same way.

Profiles (``profiles/<name>.yaml``) hold overrides of existing keys only, e.g.
the tiny ``smoke`` profile used by the tests and CI; see :func:`set_args`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Literal

from ruamel.yaml import YAML

from components.config import ConfigError, build, deep_merge, flatten
from components.data.schema import AnnotationSource

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
class Params:
    """All of ``params.yaml``. Later stages add their group here."""

    prepare: PrepareConfig


def _read_yaml(path: str | os.PathLike) -> Any:
    # ruamel (YAML 1.2) is what DVC uses, so `1e-3` is a float here as in DVC.
    with open(path) as f:
        return YAML(typ="safe", pure=True).load(f)


def load_params(path: str | os.PathLike = "params.yaml", *, profile: str | None = None) -> Params:
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
    return build(Params, data, source=source)


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
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (list, tuple)):
            value = "[" + ",".join(str(v) for v in value) + "]"
        args += ["-S", f"{key}={value}"]
    return args


def write_profile_params(params_path: str | os.PathLike, profile: str, out: str | os.PathLike) -> None:
    """Write ``params_path`` overlaid with ``profile`` to ``out`` (validated first).

    Used by tests and ``capsynth profile --write`` to build a self-contained
    params file for a throwaway copy of the repo.
    """
    data = deep_merge(_read_yaml(params_path), _read_yaml(PROFILES_DIR / f"{profile}.yaml") or {},
                      source=profile)
    build(Params, data, source=f"{params_path} + profile {profile}")
    yaml = YAML()
    yaml.default_flow_style = False
    with open(out, "w") as f:
        yaml.dump(data, f)
