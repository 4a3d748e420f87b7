"""Backbone registry: every entry builds, maps (B, 3, S, S) to its grid, at small inputs."""

from __future__ import annotations

import pytest
import torch

from components.features.backbones import BACKBONES, Backbone, get_spec


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One intra-op thread: on a small shared CI machine, more threads mostly wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

# (name, input size, channels): the smallest sizes the trunks take, to keep this fast
CASES = [
    ("resnet18", 64, 512),
    ("resnet50", 64, 2048),
    ("resnet101", 64, 2048),
    ("resnet152", 64, 2048),
    pytest.param("vgg16", 64, 512, marks=pytest.mark.slow),  # builds its 120M-parameter head too
    ("inception_v3", 75, 2048),
]


def test_registry_names():
    assert set(BACKBONES) == {"resnet18", "resnet50", "resnet101", "resnet152", "vgg16", "inception_v3"}
    with pytest.raises(ValueError, match="unknown backbone 'resnet19'.*resnet18"):
        get_spec("resnet19")


@pytest.mark.parametrize("name,size,channels", CASES)
def test_grid_and_pooled_shapes(name, size, channels):
    torch.manual_seed(0)
    backbone = BACKBONES[name](grid_size=2).eval()
    assert isinstance(backbone, Backbone) and backbone.channels == channels
    # batch of 1: the shape feature_map_size uses too, so oneDNN builds its kernels once
    x = torch.rand(1, 3, size, size)  # (B, 3, S, S) in [0, 1]
    with torch.inference_mode():
        grid = backbone(x)
        grid2, pooled = backbone.extract(x)
        fmap = backbone.feature_map(x)
    assert grid.shape == (1, channels, 2, 2)
    assert pooled.shape == (1, channels)
    assert torch.equal(grid, grid2)
    # pooled is the backbone's own global average pool of the whole feature map
    torch.testing.assert_close(pooled, fmap.mean(dim=(2, 3)))
    assert backbone.feature_map_size(size) == fmap.shape[-1]
    # the trunk's state_dict keys are torchvision's own
    first = next(iter(backbone.trunk.state_dict()))
    assert first.split(".")[0] in get_spec(name).trunk_children


def test_grid_pooling_is_adaptive_average():
    torch.manual_seed(0)
    backbone = BACKBONES["resnet18"](grid_size=2).eval()
    x = torch.rand(1, 3, 128, 128)
    with torch.inference_mode():
        fmap = backbone.feature_map(x)  # (1, 512, 4, 4)
        grid = backbone(x)
    torch.testing.assert_close(grid[0, :, 0, 0], fmap[0, :, :2, :2].mean(dim=(1, 2)))
    torch.testing.assert_close(grid[0, :, 1, 0], fmap[0, :, 2:, :2].mean(dim=(1, 2)))


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "vgg16", "inception_v3"])
def test_stages_cut_the_trunk_by_output_stride(name):
    spec = get_spec(name)
    size = 128
    sides = []
    for stage in (1, 2, 3, 4):
        backbone = spec(grid_size=1, stage=stage, device="meta").eval()  # shapes only, no compute
        fmap = backbone.trunk(torch.zeros(1, 3, size, size, device="meta"))
        assert fmap.shape[1] == spec.stage_channels(stage) == backbone.channels
        sides.append(fmap.shape[-1])
        # keys stay torchvision's, so a checkpoint loads into any stage
        full = set(spec.build_trunk(stage=4, device="meta").state_dict())
        assert set(backbone.trunk.state_dict()) <= full
    if name == "inception_v3":  # unpadded convolutions: roughly 4, 8, 16, 32
        assert sides == sorted(sides, reverse=True) and len(set(sides)) == 4
    else:
        assert sides == [32, 16, 8, 4]  # output stride 4, 8, 16, 32
    with pytest.raises(ValueError, match="stage must be 1 to 4"):
        spec(grid_size=1, stage=5)


def test_input_size_native_and_minimum():
    assert get_spec("inception_v3").resolve_input_size(0) == 299
    assert get_spec("resnet50").resolve_input_size(0) == 224
    assert get_spec("resnet18").resolve_input_size(96) == 96
    with pytest.raises(ValueError, match="inception_v3 needs input_size >= 75"):
        get_spec("inception_v3").resolve_input_size(64)


def test_meta_build_allocates_nothing():
    backbone = BACKBONES["resnet50"](grid_size=3, device="meta")
    assert all(p.is_meta for p in backbone.trunk.parameters())
    assert not backbone.mean.is_meta  # normalization constants are real
    assert "mean" not in backbone.state_dict()  # and not part of the weights


def test_vgg16_stage_3_is_the_conv5_map_show_attend_and_tell_attends():
    """Xu et al. 2015 attend VGG's last conv layer before max pooling: 14 x 14 x 512 at 224 px."""
    spec = get_spec("vgg16")
    trunk = spec.build_trunk(stage=3, device="meta")
    layers = list(trunk.features)
    assert len(layers) == 30 and type(layers[-1]).__name__ == "ReLU"  # features[0..29]: conv5_3 + ReLU
    assert [k for k in trunk.state_dict() if k.endswith("weight")][-1] == "features.28.weight"  # conv5_3
    backbone = spec(grid_size=14, stage=3, device="meta")
    assert backbone.trunk(torch.zeros(1, 3, 224, 224, device="meta")).shape == (1, 512, 14, 14)
    assert spec(grid_size=7, stage=4, device="meta").trunk(torch.zeros(1, 3, 224, 224, device="meta")).shape[-1] == 7
