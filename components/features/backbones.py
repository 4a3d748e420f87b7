"""CNN backbones for image features: a registry of torchvision classifiers' trunks.

Each entry of :data:`BACKBONES` is a :class:`BackboneSpec`; calling it builds a
:class:`Backbone` with random (seeded by the caller) weights::

    backbone = BACKBONES["resnet18"](grid_size=4)
    grid = backbone(images)                  # (B, 3, S, S) in [0, 1] -> (B, 512, 4, 4)
    grid, pooled = backbone.extract(images)  # + (B, 512)

The trunk is the classifier without its head (ResNet: up to ``layer4``; VGG16:
``features``; Inception v3: up to ``Mixed_7c``), so the state_dict keys are
torchvision's own (``layer1.0.conv1.weight``, ``features.0.weight``...) and a
torchvision checkpoint loads into it directly (``components.features.weights``).

``grid`` is the trunk's last feature map average-pooled to ``grid_size x
grid_size`` positions (Xu et al. 2015, "Show, Attend and Tell", attend over
the conv feature map); ``pooled`` is the mean over the *whole* feature map, the
backbone's own global average pool (ResNet / Inception ``avgpool``).

Inputs are RGB floats in ``[0, 1]``; each backbone normalizes them itself with
the statistics its ImageNet weights were trained with (ResNet / VGG: ImageNet
mean and std; Inception v3: ``(x - 0.5) / 0.5``, what torchvision's
``transform_input`` amounts to).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections import OrderedDict
from collections.abc import Callable

import torch
import torchvision
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)


class Backbone(nn.Module):
    """A classifier's convolutional trunk with its input normalization and grid pooling.

    Args:
        trunk: The convolutional layers, as a ``Sequential`` of the
            classifier's own named children (so state_dict keys match torchvision).
        name: Registry name, e.g. ``resnet18``.
        channels: ``C``, channels of the trunk's output.
        grid_size: ``g``; the feature map is average-pooled to ``g x g``.
        mean: Per-channel RGB mean subtracted from the ``[0, 1]`` input.
        std: Per-channel RGB std the input is divided by.
    """

    def __init__(self, trunk: nn.Sequential, *, name: str, channels: int, grid_size: int,
                 mean: tuple[float, float, float], std: tuple[float, float, float]):
        super().__init__()
        if grid_size < 1:
            raise ValueError(f"grid_size must be >= 1, got {grid_size}")
        self.name = name
        self.channels = channels
        self.grid_size = grid_size
        self.trunk = trunk
        # not persistent: the state_dict holds the learned weights only
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.pool = nn.AdaptiveAvgPool2d(grid_size)

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) RGB in [0, 1] -> the trunk's last feature map (B, C, h, w)."""
        return self.trunk((images - self.mean) / self.std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) RGB in [0, 1] -> grid (B, C, g, g)."""
        return self.pool(self.feature_map(images))

    def extract(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, S, S) -> grid (B, C, g, g) and pooled (B, C), the global mean of the map."""
        fmap = self.feature_map(images)  # (B, C, h, w)
        return self.pool(fmap), fmap.mean(dim=(2, 3))

    @torch.no_grad()
    def feature_map_size(self, input_size: int) -> int:
        """Side ``h`` of the trunk's feature map for ``input_size`` px inputs (one tiny forward)."""
        param = next(self.trunk.parameters())
        x = torch.zeros(1, 3, input_size, input_size, dtype=param.dtype, device=param.device)
        was_training = self.training
        self.eval()
        try:
            return int(self.feature_map(x).shape[-1])
        finally:
            self.train(was_training)


@dataclasses.dataclass(frozen=True)
class Stage:
    """Where the trunk ends for one stage: after child ``last`` (up to item ``index`` of it)."""

    last: str  # a named child of the classifier
    channels: int
    index: int | None = None  # cut inside a Sequential child (VGG's ``features``), inclusive


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """One registry entry: how to build the torchvision classifier and cut its trunk.

    The trunk ends at one of four stages, by output stride: 1 → 4, 2 → 8,
    3 → 16, 4 → 32 (the whole convolutional trunk, the default), each at the
    deepest layer of that stride (ResNet ``layerN``; VGG16 ``conv3_3``,
    ``conv4_3``, ``conv5_3`` before their max-pool, then ``pool5``). Earlier
    stages give larger maps with fewer channels, for less computation.

    Calling the spec builds a :class:`Backbone` (random init from the global
    torch RNG; ``components.features.weights.load_backbone`` seeds it and loads
    weights).
    """

    name: str
    native_input_size: int  # the size its ImageNet weights were trained at
    min_input_size: int  # smallest input the whole trunk accepts
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    classifier: Callable[[], nn.Module]  # the torchvision model, weights=None
    trunk_children: tuple[str, ...]  # its named children that form the whole trunk, in order
    stages: tuple[Stage, Stage, Stage, Stage]  # output stride 4, 8, 16, 32
    weights_enum: str  # torchvision's weights enum, e.g. "ResNet18_Weights"

    @property
    def channels(self) -> int:
        """C of the whole trunk (stage 4)."""
        return self.stages[-1].channels

    def stage_channels(self, stage: int) -> int:
        """C of the trunk cut at ``stage``."""
        return self._stage(stage).channels

    def _stage(self, stage: int) -> Stage:
        if not 1 <= stage <= len(self.stages):
            raise ValueError(f"stage must be 1 to {len(self.stages)} (output stride 4 to 32), got {stage}")
        return self.stages[stage - 1]

    def build_trunk(self, *, stage: int = 4, device: torch.device | str | None = None) -> nn.Sequential:
        """The trunk up to ``stage``. ``device="meta"`` allocates nothing (to load a state_dict into)."""
        cut = self._stage(stage)
        with torch.device(device) if device is not None else contextlib.nullcontext():
            model = self.classifier()
        children = dict(model.named_children())
        names = self.trunk_children[: self.trunk_children.index(cut.last) + 1]
        modules = OrderedDict((name, children[name]) for name in names)
        if cut.index is not None:  # slicing a Sequential keeps its keys ("features.16.weight")
            modules[cut.last] = children[cut.last][: cut.index + 1]
        return nn.Sequential(modules)

    def __call__(self, *, grid_size: int, stage: int = 4,
                 device: torch.device | str | None = None) -> Backbone:
        trunk = self.build_trunk(stage=stage, device=device)
        return Backbone(trunk, name=self.name, channels=self.stage_channels(stage), grid_size=grid_size,
                        mean=self.mean, std=self.std)

    def resolve_input_size(self, input_size: int) -> int:
        """``0`` means the native size (224, Inception v3: 299); others are checked."""
        size = input_size or self.native_input_size
        if size < self.min_input_size:
            raise ValueError(f"{self.name} needs input_size >= {self.min_input_size}, got {size}")
        return size


_RESNET_TRUNK = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
_INCEPTION_TRUNK = (
    "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
    "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
    "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c",
)


def _resnet(name: str, widths: tuple[int, int, int, int], enum: str) -> BackboneSpec:
    return BackboneSpec(
        name=name, native_input_size=224, min_input_size=32, mean=IMAGENET_MEAN, std=IMAGENET_STD,
        classifier=lambda: getattr(torchvision.models, name)(weights=None),
        trunk_children=_RESNET_TRUNK,
        stages=tuple(Stage(f"layer{k + 1}", c) for k, c in enumerate(widths)),  # type: ignore[arg-type]
        weights_enum=enum,
    )


BACKBONES: dict[str, BackboneSpec] = {
    "resnet18": _resnet("resnet18", (64, 128, 256, 512), "ResNet18_Weights"),
    "resnet50": _resnet("resnet50", (256, 512, 1024, 2048), "ResNet50_Weights"),
    "resnet101": _resnet("resnet101", (256, 512, 1024, 2048), "ResNet101_Weights"),
    "resnet152": _resnet("resnet152", (256, 512, 1024, 2048), "ResNet152_Weights"),
    "vgg16": BackboneSpec(
        name="vgg16", native_input_size=224, min_input_size=32, mean=IMAGENET_MEAN, std=IMAGENET_STD,
        classifier=lambda: torchvision.models.vgg16(weights=None),
        trunk_children=("features",),
        # the deepest layer at each output stride, as ResNet's layer1..layer4: conv3_3, conv4_3 and
        # conv5_3 (each after its ReLU, before the max-pool: features[15], [22], [29]), then pool5
        # ([30]). Stage 3 at 224 px is the 14 x 14 x 512 conv5 map Show, Attend and Tell attends
        # (Xu et al. 2015, sec. 3.1.1: a conv layer "before max pooling", of VGG)
        stages=(Stage("features", 256, 15), Stage("features", 512, 22), Stage("features", 512, 29),
                Stage("features", 512, 30)),
        weights_enum="VGG16_Weights",
    ),
    "inception_v3": BackboneSpec(
        name="inception_v3", native_input_size=299, min_input_size=75,
        mean=INCEPTION_MEAN, std=INCEPTION_STD,
        # aux_logits off: the aux head is not part of the trunk (its keys are ignored on load)
        classifier=lambda: torchvision.models.inception_v3(weights=None, aux_logits=False,
                                                           init_weights=True),
        trunk_children=_INCEPTION_TRUNK,
        stages=(Stage("Conv2d_4a_3x3", 192), Stage("Mixed_5d", 288), Stage("Mixed_6e", 768),
                Stage("Mixed_7c", 2048)),
        weights_enum="Inception_V3_Weights",
    ),
}


def get_spec(name: str) -> BackboneSpec:
    """The registry entry ``name``; a ValueError lists the known names."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone '{name}' (known: {', '.join(BACKBONES)})") from None


__all__ = ["BACKBONES", "Backbone", "BackboneSpec", "get_spec", "IMAGENET_MEAN", "IMAGENET_STD"]
