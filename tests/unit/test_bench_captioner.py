"""The step benchmark's ``--compare model -S KEY=VALUE`` parsing: YAML values over the model's keys, and a
clear refusal of anything else (the benchmark would otherwise time the wrong model)."""
import pytest

from bench.captioner.__main__ import _model_changes


def test_values_are_yaml():
    changes = _model_changes(["attention_dim=64", "attention=dot", "position_embedding=false"], "params.yaml")
    assert changes == {"attention_dim": 64, "attention": "dot", "position_embedding": False}


@pytest.mark.parametrize("pairs, says", [(["hidden=64"], "hidden"), (["attention_dim"], "attention_dim"),
                                         ([], "at least one")])
def test_refuses_unknown_keys_and_nothing(pairs, says):
    with pytest.raises(SystemExit, match=says):
        _model_changes(pairs, "params.yaml")
