"""The ``features`` params group: strict, typed, validated; names shared with extract_features."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from components.config import ConfigError, build, to_dict
from components.features.extract import extract_features
from pipelines.config import FeaturesConfig, load_params


@pytest.fixture
def defaults(repo_root) -> dict:
    return to_dict(load_params(repo_root / "params.yaml").features)


def test_defaults_are_offline_and_small(repo_root):
    cfg = load_params(repo_root / "params.yaml").features
    assert cfg.weights == "random" and cfg.backbone == "resnet18"
    smoke = load_params(repo_root / "params.yaml", profile="smoke").features
    assert smoke.input_size <= cfg.input_size
    assert smoke.grid_size <= smoke.input_size // 2 ** (smoke.stage + 1)  # fits the feature map


def test_every_key_is_a_keyword_of_extract_features():
    params = set(inspect.signature(extract_features).parameters)
    assert {f.name for f in dataclasses.fields(FeaturesConfig)} <= params


@pytest.mark.parametrize("change,message", [
    ({"backbon": "resnet18"}, "unknown key 'features.backbon'"),
    ({"backbone": "resnet34"}, "key 'features.backbone' must be one of"),
    ({"dtype": "bfloat16"}, "key 'features.dtype' must be one of"),
    ({"grid_size": "4"}, "key 'features.grid_size' must be an integer"),
    ({"weights": "path"}, "features.weights_path is empty"),
    ({"input_size": 16}, "features.input_size must be 0"),
    ({"stage": 5}, "features.stage must be 1 to 4"),
    ({"num_actors": 0}, "features.num_actors must be >= 1"),
])
def test_bad_values_name_the_key(defaults, change, message):
    with pytest.raises(ConfigError, match=message):
        build(FeaturesConfig, {**defaults, **change}, source="params.yaml", prefix="features")
