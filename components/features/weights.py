"""Backbone weights: ``random`` (seeded), ``imagenet`` (torch hub cache) or a local file.

Nothing here downloads. The three choices:

``random``
    torchvision's own initialization, drawn from ``torch.manual_seed(seed)``
    (the global RNG is restored afterwards), then the BatchNorm running
    statistics are set from one forward pass over seeded noise images
    (:func:`calibrate_batchnorm`). Without that step a random network's
    activations grow with depth (resnet152: ~1e8, inception_v3: ~1e11 at the
    last layer), which overflows float16 storage and buries the signal; with it
    every layer's output has about unit scale. VGG16 has no BatchNorm and
    stays as initialized (its activations are O(1) already). The result is a
    function of (backbone, seed) alone.
``imagenet``
    torchvision's ``IMAGENET1K_V1`` weights, read from the torch hub cache,
    ``torch.hub.get_dir()/checkpoints/<file name of the weights URL>`` (where
    ``torchvision`` itself would have saved them). When the file is absent,
    :class:`WeightsNotFoundError` names the file, the URL and the folder.
``path``
    a state_dict file, loaded with ``torch.load(..., weights_only=True)``:
    a torchvision classifier's state_dict (head keys are ignored), a
    :class:`~components.features.backbones.Backbone`'s (``trunk.`` prefix), or
    either wrapped as ``{"state_dict": ...}`` / ``{"model": ...}``.

The weights are identified by :func:`state_dict_sha256`, a SHA-256 over the
trunk's tensors in sorted key order, recorded with the features.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Literal

import torch
import torchvision
from torch import nn

from components.features.backbones import Backbone, BackboneSpec, get_spec

WeightsChoice = Literal["random", "imagenet", "path"]
WEIGHTS_CHOICES: tuple[str, ...] = ("random", "imagenet", "path")
# every registry backbone has this version; DEFAULT may move between torchvision releases
IMAGENET_VERSION = "IMAGENET1K_V1"
# BatchNorm calibration of random weights: this many seeded noise images of this size
CALIBRATION_IMAGES = 16
CALIBRATION_SIZE = 128
# buffers that do not change what a network computes: not required on load, not hashed
_IGNORED_SUFFIXES = ("num_batches_tracked",)


class WeightsError(ValueError):
    """A weights file cannot be used for the requested backbone."""


class WeightsNotFoundError(FileNotFoundError):
    """Weights are not on disk (and nothing is downloaded)."""


@dataclasses.dataclass(frozen=True)
class WeightsInfo:
    """What was loaded, recorded in the features' ``meta.json``."""

    choice: str  # random | imagenet | path
    source: str  # "seed 0" | "torchvision ResNet18_Weights.IMAGENET1K_V1 (resnet18-f37072fd.pth)" | the path
    sha256: str  # state_dict_sha256 of the trunk


def imagenet_url(backbone: str) -> str:
    """The URL torchvision publishes the backbone's ImageNet weights at."""
    spec = get_spec(backbone)
    enum = getattr(torchvision.models, spec.weights_enum)
    return getattr(enum, IMAGENET_VERSION).url


def imagenet_file(backbone: str) -> Path:
    """Where the ImageNet weights are expected: the torch hub cache's ``checkpoints/``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(imagenet_url(backbone))


def _hashable(name: str) -> bool:
    return not name.endswith(_IGNORED_SUFFIXES)


def state_dict_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over ``(key, dtype, shape, bytes)`` of every tensor, keys sorted.

    ``num_batches_tracked`` counters are left out: they do not change the outputs.
    """
    h = hashlib.sha256()
    for key in sorted(k for k in state_dict if _hashable(k)):
        t = state_dict[key].detach().to("cpu").contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a state_dict file safely (``weights_only=True``); unwrap common checkpoint forms.

    Raises:
        WeightsNotFoundError: the file does not exist.
        WeightsError: it is not a state_dict (or not loadable with ``weights_only``).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"weights file {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError, RuntimeError (not a zip / pickle)...
        raise WeightsError(f"{path}: not loadable with torch.load(weights_only=True): "
                           f"{type(err).__name__}: {err}") from err
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: expected a state_dict (a dict of tensors), got {type(obj).__name__}")
    return obj


def load_trunk_state(backbone: Backbone, state_dict: dict[str, torch.Tensor], *, source: str) -> None:
    """Load ``state_dict`` into ``backbone.trunk``; keys outside the trunk are ignored.

    Keys may be torchvision's (``layer1.0.conv1.weight``), a Backbone's
    (``trunk.layer1...``) or carry DDP's ``module.`` prefix.

    Raises:
        WeightsError: naming missing keys or mismatched shapes.
    """
    cleaned = {}
    for key, value in state_dict.items():
        for prefix in ("module.", "trunk."):
            key = key.removeprefix(prefix)
        cleaned[key] = value
    expected = backbone.trunk.state_dict()
    missing = sorted(k for k in expected if k not in cleaned and _hashable(k))
    if missing:
        raise WeightsError(
            f"{source}: does not fit {backbone.name}: {len(missing)} trunk keys missing, e.g. "
            f"{', '.join(missing[:3])}"
        )
    wrong = [k for k in expected if k in cleaned and cleaned[k].shape != expected[k].shape]
    if wrong:
        k = wrong[0]
        raise WeightsError(f"{source}: does not fit {backbone.name}: '{k}' has shape "
                           f"{tuple(cleaned[k].shape)}, expected {tuple(expected[k].shape)}")
    # assign: the trunk may be built on the meta device (nothing allocated, nothing initialized)
    backbone.trunk.load_state_dict(
        {k: cleaned[k].to(expected[k].dtype) for k in expected if k in cleaned}, strict=False, assign=True
    )
    for module in backbone.trunk.modules():  # counters absent from old checkpoints
        for key, buf in module.named_buffers(recurse=False):
            if buf.is_meta:
                module.register_buffer(key, torch.zeros((), dtype=buf.dtype))


def _calibration_images(seed: int) -> torch.Tensor:
    """(N, 3, S, S) in [0, 1]: smooth colour blobs plus pixel noise, from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    n, s = CALIBRATION_IMAGES, CALIBRATION_SIZE
    coarse = torch.rand(n, 3, 8, 8, generator=g)  # colour blobs
    smooth = nn.functional.interpolate(coarse, size=(s, s), mode="bilinear", align_corners=False)
    return (smooth + 0.1 * torch.randn(n, 3, s, s, generator=g)).clamp_(0.0, 1.0)


@torch.no_grad()
def calibrate_batchnorm(backbone: Backbone, seed: int) -> None:
    """Set every BatchNorm's running mean/var from one batch of seeded noise images."""
    norms = [m for m in backbone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: one batch -> exactly its statistics
    backbone.train()
    # one thread: the statistics are sums whose rounding follows how the threads split them, and a
    # model folder pins their SHA-256, so a stage run with 1 thread and one with 2 must agree
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        backbone.feature_map(_calibration_images(seed))
    finally:
        torch.set_num_threads(threads)
    backbone.eval()
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum


def random_backbone(spec: BackboneSpec, *, seed: int, grid_size: int, stage: int = 4) -> Backbone:
    """torchvision's initialization from ``seed``, BatchNorm calibrated; global RNG untouched.

    The layers up to a stage are the same whatever the stage (torchvision
    initializes them first, in order).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone = spec(grid_size=grid_size, stage=stage)
    calibrate_batchnorm(backbone, seed)
    return backbone


def check_available(name: str, *, weights: str, weights_path: str = "") -> None:
    """Fail fast, before anything starts, when the weights are not on disk.

    Raises:
        WeightsNotFoundError: naming the file (and for ImageNet, the URL and the folder).
        WeightsError: ``weights="path"`` without a ``weights_path``.
    """
    if weights == "imagenet":
        file = imagenet_file(name)
        if not file.is_file():
            enum = f"{get_spec(name).weights_enum}.{IMAGENET_VERSION}"
            raise WeightsNotFoundError(
                f"ImageNet weights for {name} ({enum}) not found: expected the file {file}. "
                f"Nothing is downloaded: fetch {imagenet_url(name)} and put it in {file.parent}/ "
                f"(or set TORCH_HOME), or use weights: random"
            )
    elif weights == "path":
        if not weights_path:
            raise WeightsError("weights: path needs weights_path, the state_dict file to load")
        if not Path(weights_path).is_file():
            raise WeightsNotFoundError(f"weights file {weights_path} does not exist")


def load_backbone(
    name: str,
    *,
    weights: WeightsChoice,
    grid_size: int,
    stage: int = 4,
    weights_path: str = "",
    seed: int = 0,
) -> tuple[Backbone, WeightsInfo]:
    """Build backbone ``name`` with the chosen weights, in eval mode on the CPU.

    Args:
        name: A key of :data:`~components.features.backbones.BACKBONES`.
        weights: ``random``, ``imagenet`` or ``path`` (see the module docstring).
        grid_size: Side of the pooled attention grid.
        stage: Where the trunk ends, 1 to 4 (output stride 4 to 32; 4: the whole trunk).
        weights_path: The state_dict file, for ``weights="path"``.
        seed: Seed of the initialization, for ``weights="random"``.

    Returns:
        The backbone and what was loaded (with the SHA-256 of its weights).

    Raises:
        WeightsNotFoundError: ImageNet weights not in the hub cache, or no file at ``weights_path``.
        WeightsError: a file that does not fit the backbone.
        ValueError: an unknown backbone or weights choice.
    """
    spec = get_spec(name)
    if weights in ("imagenet", "path"):
        check_available(name, weights=weights, weights_path=weights_path)
    if weights == "random":
        backbone = random_backbone(spec, seed=seed, grid_size=grid_size, stage=stage)
        source = f"seed {seed}"
    elif weights == "imagenet":
        file = imagenet_file(name)
        enum = f"{spec.weights_enum}.{IMAGENET_VERSION}"
        backbone = spec(grid_size=grid_size, stage=stage, device="meta")
        load_trunk_state(backbone, read_state_dict(file), source=str(file))
        source = f"torchvision {enum} ({file.name})"
    elif weights == "path":
        backbone = spec(grid_size=grid_size, stage=stage, device="meta")
        load_trunk_state(backbone, read_state_dict(weights_path), source=weights_path)
        source = weights_path
    else:
        raise ValueError(f"unknown weights choice '{weights}' (known: {', '.join(WEIGHTS_CHOICES)})")
    backbone.eval()
    return backbone, WeightsInfo(choice=weights, source=source,
                                 sha256=state_dict_sha256(backbone.state_dict()))


def backbone_from_state(name: str, state_dict: dict[str, torch.Tensor], *, grid_size: int,
                        stage: int = 4) -> Backbone:
    """Rebuild a backbone from its own state_dict without initializing weights (meta build)."""
    backbone = get_spec(name)(grid_size=grid_size, stage=stage, device="meta")
    # cloned: the tensors may be read-only views (e.g. of Ray's object store)
    load_trunk_state(backbone, {k: v.clone() for k, v in state_dict.items()}, source=f"{name} state")
    return backbone.eval()


__all__ = [
    "WEIGHTS_CHOICES", "WeightsInfo", "WeightsError", "WeightsNotFoundError", "check_available",
    "imagenet_url", "imagenet_file", "state_dict_sha256", "read_state_dict", "load_trunk_state",
    "calibrate_batchnorm",
    "random_backbone", "load_backbone", "backbone_from_state",
]
