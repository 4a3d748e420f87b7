"""The sweep's parts that need no Ray instance: space checks and samplers, overrides, concurrency, the best trial."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from components.config import ConfigError
from components.train.tune import search_space
from pipelines import sweep
from pipelines.config import load_params

REPO = Path(__file__).resolve().parents[2]


def test_overrides_rebuild_the_stage_config_strictly():
    base = load_params(REPO / "params.yaml", profile="smoke").train_captioner
    cfg = sweep.apply_overrides(base, {"train.lr": 0.01, "model.hidden_dim": 64}, "train_captioner")
    assert (cfg.train.lr, cfg.model.hidden_dim, cfg.model.embed_dim) == (0.01, 64, base.model.embed_dim)
    with pytest.raises(ConfigError, match=r"train_captioner.model.hidden_dim"):
        sweep.apply_overrides(base, {"model.hidden_dim": "wide"}, "train_captioner")


def test_the_space_becomes_tune_samplers():
    space = load_params(REPO / "params.yaml").sweep["captioner"].space
    samplers = search_space(space)
    assert set(samplers) == set(space)
    assert samplers["model.hidden_dim"].categories == [128, 256, 512]
    assert (samplers["train.lr"].lower, samplers["train.lr"].upper) == (space["train.lr"].low, space["train.lr"].high)


def test_the_best_trial_is_one_that_ran_every_epoch():
    trials = [{"trial": "a", "epochs": 2, "error": False, "val_cider": 0.3, "config": {}},
              {"trial": "b", "epochs": 1, "error": False, "val_cider": 0.9, "config": {}},  # stopped by ASHA
              {"trial": "c", "epochs": 2, "error": False, "val_cider": 0.5, "config": {}},
              {"trial": "d", "epochs": 2, "error": True, "val_cider": None, "config": {}}]
    assert sweep.best_trial(trials, "val_cider", "max")["trial"] == "c"
    assert sweep.best_trial(trials, "val_cider", "min")["trial"] == "a"
    assert sweep.best_trial(trials[3:], "val_cider", "max") is None


def test_a_typo_in_the_space_names_the_key():
    params = load_params(REPO / "params.yaml", profile="smoke")
    space = {**params.sweep["captioner"].space, "train.learning_rate": params.sweep["captioner"].space["train.lr"]}
    with pytest.raises(ConfigError, match=r"'train.learning_rate' is not a param of train_captioner"):
        sweep.check_space(space, params.train_captioner, "train_captioner")


def test_one_trial_larger_than_the_cluster_is_refused():
    params = load_params(REPO / "params.yaml", profile="smoke")
    base = params.train_captioner
    wide = dataclasses.replace(base, scaling=dataclasses.replace(base.scaling, num_workers=3, use_gpu=False))
    with pytest.raises(ConfigError, match=r"needs 3.1 CPU"):
        sweep.trials_at_once(params.sweep["captioner"], wide, {"CPU": 2.0})
    assert sweep.trials_at_once(params.sweep["captioner"], base, {"CPU": 2.0}) == 1
    assert sweep.trials_at_once(params.sweep["captioner"], base, {"CPU": 16.0}) == 2  # num_samples caps it
    with pytest.raises(ConfigError, match="needs 1.1 CPU"):
        sweep.trials_at_once(params.sweep["captioner"], base, {"CPU": 1.0})


def test_a_search_dimension_without_its_bounds_is_refused():
    from pipelines.config import SearchDim

    with pytest.raises(ConfigError, match="'choice' dimension needs a non-empty 'values'"):
        SearchDim(type="choice")
    with pytest.raises(ConfigError, match="low > 0 for loguniform"):
        SearchDim(type="loguniform", low=0.0, high=1.0)
    assert SearchDim(type="uniform", low=0.1, high=0.5).high == 0.5
