"""Strict config: unknown, missing and mistyped keys fail naming key and file."""

from __future__ import annotations

import dataclasses
from typing import Literal

import pytest

from components.config import ConfigError, build, deep_merge, flatten
from pipelines import config as pconfig


@dataclasses.dataclass(frozen=True)
class Inner:
    size: int
    ratio: float


@dataclasses.dataclass(frozen=True)
class Outer:
    name: str
    mode: Literal["a", "b"]
    inner: Inner
    items: tuple[int, ...]
    maybe: str | None = None


GOOD = {"name": "x", "mode": "a", "inner": {"size": 3, "ratio": 1}, "items": [1, 2]}


def test_build_converts_types():
    cfg = build(Outer, GOOD, source="p.yaml")
    assert cfg == Outer("x", "a", Inner(3, 1.0), (1, 2))
    assert isinstance(cfg.inner.ratio, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.name = "y"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({**GOOD, "nmae": 1}, "p.yaml: unknown key 'nmae'"),
        ({**GOOD, "inner": {"size": 3, "ratio": 1, "extra": 0}}, "unknown key 'inner.extra'"),
        ({k: v for k, v in GOOD.items() if k != "name"}, "p.yaml: missing key 'name'"),
        ({**GOOD, "inner": {"ratio": 1.0}}, "missing key 'inner.size'"),
        ({**GOOD, "inner": {"size": "3", "ratio": 1}}, "key 'inner.size' must be an integer"),
        ({**GOOD, "inner": {"size": True, "ratio": 1}}, "key 'inner.size' must be an integer"),
        ({**GOOD, "mode": "c"}, "key 'mode' must be one of 'a' | 'b'"),
        ({**GOOD, "items": [1, "x"]}, "key 'items[1]' must be an integer"),
        ({**GOOD, "items": 5}, "key 'items' must be a list"),
    ],
)
def test_build_rejects_bad_input(data, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]").replace("|", r"\|")):
        build(Outer, data, source="p.yaml")


def test_flatten_and_merge():
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}
    assert deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"b": 5}}) == {"a": {"b": 5, "c": 2}}
    with pytest.raises(ConfigError, match="unknown key 'a.z'"):
        deep_merge({"a": {"b": 1}}, {"a": {"z": 5}}, source="smoke.yaml")


def test_repo_params_and_smoke_profile_load(repo_root):
    params = pconfig.load_params(repo_root / "params.yaml")
    smoke = pconfig.load_params(repo_root / "params.yaml", profile="smoke")
    assert smoke.prepare.synthetic.num_images < params.prepare.synthetic.num_images
    args = pconfig.set_args("smoke")
    assert args[0] == "-S" and "prepare.synthetic.num_images=" + str(smoke.prepare.synthetic.num_images) in args


def test_params_file_errors_name_file_and_key(tmp_path, repo_root):
    text = (repo_root / "params.yaml").read_text()
    bad = tmp_path / "params.yaml"
    bad.write_text(text.replace("  seed: 0", "  seed: zero"))
    with pytest.raises(ConfigError, match=rf"{bad}.*key 'prepare.seed' must be an integer"):
        pconfig.load_params(bad)
    bad.write_text(text.replace("  seed: 0", "  seeed: 0"))
    with pytest.raises(ConfigError, match="unknown key 'prepare.seeed'"):
        pconfig.load_params(bad)
    bad.write_text(text.replace("    image_size: 64\n", ""))
    with pytest.raises(ConfigError, match="missing key 'prepare.synthetic.image_size'"):
        pconfig.load_params(bad)
    bad.write_text(text + "\ntrian:\n  lr: 1\n")
    with pytest.raises(ConfigError, match="unknown key 'trian'"):
        pconfig.load_params(bad)


def test_yaml_floats_read_as_dvc_does(tmp_path, repo_root):
    # YAML 1.2 (DVC's ruamel): 1e-1 is a number, not the string PyYAML would give
    text = (repo_root / "params.yaml").read_text().replace("val_fraction: 0.1", "val_fraction: 1e-1")
    p = tmp_path / "params.yaml"
    p.write_text(text)
    assert pconfig.load_params(p).prepare.synthetic.val_fraction == pytest.approx(0.1)


def test_write_profile_params(tmp_path, repo_root):
    out = tmp_path / "params.yaml"
    pconfig.write_profile_params(repo_root / "params.yaml", "smoke", out)
    assert pconfig.load_params(out) == pconfig.load_params(repo_root / "params.yaml", profile="smoke")
    with pytest.raises(ConfigError, match="unknown profile 'nope'"):
        pconfig.load_params(repo_root / "params.yaml", profile="nope")


PROFILES = sorted(p.stem for p in pconfig.PROFILES_DIR.glob("*.yaml"))
RECIPES = [name for name in PROFILES if name != "smoke"]  # README §Recipes


def test_the_recipes_are_there():
    assert {"coco_karpathy", "flickr8k", "flickr30k", "show_attend_tell_vgg16"} <= set(RECIPES)


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_validates_and_writes_a_params_file(profile, tmp_path, repo_root):
    """Through the real params validation: a renamed or mistyped key in params.yaml breaks a profile here."""
    params = pconfig.load_params(repo_root / "params.yaml", profile=profile)
    out = tmp_path / "params.yaml"
    pconfig.write_profile_params(repo_root / "params.yaml", profile, out)
    assert pconfig.load_params(out) == params


@pytest.mark.parametrize("profile", PROFILES)
def test_profile_set_args_give_the_profile_through_dvc(profile, tmp_path, repo_root):
    """``dvc exp run $(capsynth profile NAME)``: DVC's own -S parser applied to params.yaml gives the profile."""
    from dvc.utils.hydra import apply_overrides

    out = tmp_path / "params.yaml"
    out.write_text((repo_root / "params.yaml").read_text())
    args = pconfig.set_args(profile)
    assert not [a for a in args if " " in a]  # survives the shell's word splitting
    apply_overrides(out, args[1::2])
    assert pconfig.load_params(out) == pconfig.load_params(repo_root / "params.yaml", profile=profile)


@pytest.mark.parametrize("profile", RECIPES)
def test_recipe_grid_is_its_backbones_feature_map_and_its_data_is_real(profile, repo_root):
    """Each recipe attends the whole map of its backbone at its input size (no pooling of it), e.g.
    Show, Attend and Tell's VGG conv5 14 x 14; and its SCST reward needs no synthetic scene table."""
    import torch

    from components.features.backbones import get_spec

    params = pconfig.load_params(repo_root / "params.yaml", profile=profile)
    f = params.features
    spec = get_spec(f.backbone)
    size = spec.resolve_input_size(f.input_size)
    fmap = spec(grid_size=f.grid_size, stage=f.stage, device="meta").trunk(torch.zeros(1, 3, size, size, device="meta"))
    assert tuple(fmap.shape[1:]) == (spec.stage_channels(f.stage), f.grid_size, f.grid_size)
    assert f.weights == "imagenet" and params.prepare.dataset != "synthetic" and params.prepare.sources
    assert params.finetune_captioner.train.reward == "cider_d"
