"""The step benchmark's ``--compare model -S KEY=VALUE`` parsing: YAML values over the model's keys, and a
clear refusal of anything else (the benchmark would otherwise time the wrong model)."""
import pytest

from bench.captioner.__main__ import _model_changes
from pipelines.config import load_params


@pytest.fixture(scope="module")
def model_params():
    return load_params("params.yaml").train_captioner.model


def test_values_are_yaml(model_params):
    changes = _model_changes(["attention_dim=64", "attention=dot", "position_embedding=false"], model_params)
    assert changes == {"attention_dim": 64, "attention": "dot", "position_embedding": False}


@pytest.mark.parametrize("pairs, says", [(["hidden=64"], "hidden"), (["attention_dim"], "attention_dim"),
                                         ([], "at least one")])
def test_refuses_unknown_keys_and_nothing(model_params, pairs, says):
    with pytest.raises(SystemExit, match=says):
        _model_changes(pairs, model_params)
