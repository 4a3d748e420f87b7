"""Weights resolution: random (seeded), imagenet (hub cache, never downloaded), a local file."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
import torchvision

from components.features.backbones import BACKBONES
from components.features.weights import (
    WeightsError,
    WeightsNotFoundError,
    imagenet_file,
    load_backbone,
    state_dict_sha256,
)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One intra-op thread: on a small shared CI machine, more threads mostly wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def hub_dir(tmp_path, monkeypatch) -> Path:
    """An empty torch hub cache; any download attempt fails the test."""
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "_hub_dir", str(hub))

    def no_download(*args, **kwargs):
        raise AssertionError("something tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return hub


def _torchvision_resnet18(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torchvision.models.resnet18(weights=None)


def test_imagenet_absent_names_the_expected_file(hub_dir):
    expected = hub_dir / "checkpoints" / "resnet18-f37072fd.pth"
    assert imagenet_file("resnet18") == expected
    with pytest.raises(WeightsNotFoundError) as err:
        load_backbone("resnet18", weights="imagenet", grid_size=2)
    message = str(err.value)
    assert str(expected) in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    assert "ResNet18_Weights.IMAGENET1K_V1" in message
    assert isinstance(err.value, FileNotFoundError)  # the stages print it as a one-line error


@pytest.mark.parametrize("name,file", [("inception_v3", "inception_v3_google-0cc3c7bd.pth"),
                                       ("vgg16", "vgg16-397923af.pth"),
                                       ("resnet152", "resnet152-394f9c45.pth")])
def test_imagenet_file_names(hub_dir, name, file):
    assert imagenet_file(name) == hub_dir / "checkpoints" / file


def test_imagenet_present_is_read_from_the_cache(hub_dir):
    model = _torchvision_resnet18(3)  # stands in for the real file: same keys, same format
    file = imagenet_file("resnet18")
    file.parent.mkdir(parents=True)
    torch.save(model.state_dict(), file)
    backbone, info = load_backbone("resnet18", weights="imagenet", grid_size=2)
    assert info.choice == "imagenet"
    assert "ResNet18_Weights.IMAGENET1K_V1" in info.source and file.name in info.source
    assert torch.equal(backbone.trunk.layer4[1].conv2.weight, model.layer4[1].conv2.weight)
    assert info.sha256 == state_dict_sha256(backbone.state_dict())
    assert not any(t.is_meta for t in backbone.state_dict().values())


def test_local_path_forms_load_the_same_weights(tmp_path):
    model = _torchvision_resnet18(4)
    full = tmp_path / "full.pt"
    torch.save(model.state_dict(), full)
    reference, info = load_backbone("resnet18", weights="path", weights_path=str(full), grid_size=2)
    assert info.source == str(full)
    assert torch.equal(reference.trunk.conv1.weight, model.conv1.weight)
    # a Backbone's own state_dict, a wrapped checkpoint, a DDP one: same weights, same hash
    forms = {
        "backbone.pt": reference.state_dict(),
        "wrapped.pt": {"state_dict": model.state_dict(), "epoch": 3},
        "ddp.pt": {f"module.{k}": v for k, v in model.state_dict().items()},
    }
    for name, obj in forms.items():
        torch.save(obj, tmp_path / name)
        _, other = load_backbone("resnet18", weights="path", weights_path=str(tmp_path / name), grid_size=2)
        assert other.sha256 == info.sha256, name


def test_local_path_errors(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="nope.pt does not exist"):
        load_backbone("resnet18", weights="path", weights_path=str(tmp_path / "nope.pt"), grid_size=2)
    with pytest.raises(WeightsError, match="needs weights_path"):
        load_backbone("resnet18", weights="path", weights_path="", grid_size=2)
    # another architecture's weights
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), tmp_path / "r50.pt")
    with pytest.raises(WeightsError, match="r50.pt: does not fit resnet18: 'conv1.weight'|r50.pt: does not fit"):
        load_backbone("resnet18", weights="path", weights_path=str(tmp_path / "r50.pt"), grid_size=2)
    # not a state_dict
    torch.save({"conv1.weight": "a string"}, tmp_path / "bad.pt")
    with pytest.raises(WeightsError, match="bad.pt"):
        load_backbone("resnet18", weights="path", weights_path=str(tmp_path / "bad.pt"), grid_size=2)
    # arbitrary pickled objects are refused by weights_only=True
    (tmp_path / "evil.pt").write_bytes(pickle.dumps(_Evil(), protocol=2))
    with pytest.raises(WeightsError, match="weights_only"):
        load_backbone("resnet18", weights="path", weights_path=str(tmp_path / "evil.pt"), grid_size=2)


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_random_is_seeded_deterministic_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a, info_a = load_backbone("resnet18", weights="random", seed=0, grid_size=2)
    assert torch.equal(torch.rand(3), expected_next)  # the global RNG was not consumed
    b, info_b = load_backbone("resnet18", weights="random", seed=0, grid_size=2)
    _, info_c = load_backbone("resnet18", weights="random", seed=1, grid_size=2)
    assert info_a.sha256 == info_b.sha256 != info_c.sha256
    assert info_a.source == "seed 0" and info_a.choice == "random"
    for (ka, ta), (kb, tb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(ta, tb)


def test_random_weights_do_not_depend_on_the_thread_count():
    """A model folder pins the backbone's SHA-256: features run with 1 thread, evaluation with 2, same bytes."""
    hashes = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        try:
            hashes.append(load_backbone("resnet18", weights="random", seed=0, grid_size=2)[1].sha256)
        finally:
            torch.set_num_threads(1)  # this module's setting (the fixture above)
        assert torch.get_num_threads() == 1
    assert hashes[0] == hashes[1]


def test_random_batchnorm_is_calibrated():
    backbone, _ = load_backbone("resnet18", weights="random", seed=0, grid_size=2)
    bn = backbone.trunk.bn1
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
    with torch.inference_mode():
        fmap = backbone.feature_map(torch.rand(4, 3, 128, 128))
    assert torch.isfinite(fmap).all() and fmap.abs().max() < 1e3


def test_hash_is_order_independent_and_ignores_counters():
    sd = BACKBONES["resnet18"](grid_size=2).state_dict()
    reordered = dict(reversed(list(sd.items())))
    assert state_dict_sha256(reordered) == state_dict_sha256(sd)
    counters = {k: (v + 5 if k.endswith("num_batches_tracked") else v) for k, v in sd.items()}
    assert state_dict_sha256(counters) == state_dict_sha256(sd)
    changed = dict(sd)
    changed["trunk.conv1.weight"] = sd["trunk.conv1.weight"] + 1e-3
    assert state_dict_sha256(changed) != state_dict_sha256(sd)


def test_old_checkpoints_without_counters_load(tmp_path):
    sd = {k: v for k, v in _torchvision_resnet18(5).state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(sd, tmp_path / "old.pt")
    backbone, _ = load_backbone("resnet18", weights="path", weights_path=str(tmp_path / "old.pt"), grid_size=2)
    assert not any(t.is_meta for t in backbone.state_dict().values())
    with torch.inference_mode():
        assert backbone(torch.rand(1, 3, 64, 64)).shape == (1, 512, 2, 2)
