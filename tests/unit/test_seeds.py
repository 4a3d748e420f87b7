"""``capsynth seeds``: experiment identity, params checks and the mean ± std summary (the queue: tests/e2e)."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from pipelines import seeds

ROOT = Path(__file__).resolve().parents[2]


def test_names_change_with_the_setting_the_stage_and_the_tree_not_with_order():
    base = seeds.experiment_names("gan", "train_gan.train.seed", [0, 1, 2],
                                  {"train_gan.train.epochs": 3, "train_gan.train.loss": "hinge"}, "evaluate", "")
    assert set(base) == {0, 1, 2} and base[1].startswith("gan-") and base[1].endswith("-s1")
    assert len({n.rsplit("-s", 1)[0] for n in base.values()}) == 1  # one digest for the setting
    same = seeds.experiment_names("gan", "train_gan.train.seed", [0, 1, 2],
                                  {"train_gan.train.loss": "hinge", "train_gan.train.epochs": 3}, "evaluate", "")
    assert same == base
    for other in (
        seeds.experiment_names("gan", "train_gan.train.seed", [0, 1, 2], {"train_gan.train.epochs": 4,
                                                                         "train_gan.train.loss": "hinge"},
                               "evaluate", ""),
        seeds.experiment_names("gan", "train_gan.train.seed", [0, 1, 2], {"train_gan.train.epochs": 3,
                                                                         "train_gan.train.loss": "hinge"},
                               "train_gan", ""),
        seeds.experiment_names("gan", "train_gan.train.seed", [0, 1, 2], {"train_gan.train.epochs": 3,
                                                                         "train_gan.train.loss": "hinge"},
                               "evaluate", " M components/generative/losses.py\n"),
    ):
        assert other[0] != base[0]


def test_overrides_are_read_as_yaml_and_checked_against_the_params_schema():
    assert seeds.parse_overrides(["a.b=3", "a.c=1e-3", "a.d=hinge", "a.e=true"]) == {
        "a.b": 3, "a.c": 1e-3, "a.d": "hinge", "a.e": True}
    with pytest.raises(seeds.SeedsError, match="KEY=VALUE"):
        seeds.parse_overrides(["train_gan.train.epochs"])
    params = ROOT / "params.yaml"
    seeds.check_params(params, {"train_gan.train.seed": 1, "train_gan.train.epochs": 3})
    with pytest.raises(seeds.SeedsError, match="no field 'train_gan.train.sed'"):
        seeds.check_params(params, {"train_gan.train.sed": 1})
    with pytest.raises(seeds.SeedsError, match="no field 'train_gann.train.seed'"):
        seeds.check_params(params, {"train_gann.train.seed": 1})
    with pytest.raises(seeds.SeedsError, match="train_gan.train.epochs"):
        seeds.check_params(params, {"train_gan.train.epochs": "many"})


def test_a_bad_setting_fails_before_anything_is_queued(monkeypatch, capsys):
    monkeypatch.setattr(seeds, "queue", lambda *a, **k: pytest.fail("queued despite a bad param"))
    with pytest.raises(SystemExit) as exit_:
        seeds.main(["train_gan.train.sed", "--params", str(ROOT / "params.yaml")])
    assert exit_.value.code == 2 and "no field 'train_gan.train.sed'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        seeds.main(["train_gan.train.seed", "-S", "train_gan.train.seed=3", "--params", str(ROOT / "params.yaml")])
    assert "do not also set it" in capsys.readouterr().err


def test_summary_is_mean_and_sample_std_over_seeds_per_number():
    files = {0: {"fid": 3.0, "n_fake": 300, "nested": {"kid": 0.02}, "name": "x", "flag": True},
             1: {"fid": 4.0, "n_fake": 300, "nested": {"kid": 0.03}, "name": "x", "flag": True},
             2: {"fid": 8.0, "n_fake": 300, "nested": {"kid": 0.01}, "name": "x", "flag": True}}
    per_seed = {s: seeds.flatten_numbers(m, "metrics/gan.json") for s, m in files.items()}
    assert set(per_seed[0]) == {"metrics/gan.json:fid", "metrics/gan.json:n_fake", "metrics/gan.json:nested.kid"}
    summary = seeds.summarise(per_seed)
    fid = summary["metrics/gan.json:fid"]
    assert fid["mean"] == pytest.approx(5.0) and fid["std"] == pytest.approx(statistics.stdev([3.0, 4.0, 8.0]))
    assert fid["n"] == 3 and fid["values"] == {"0": 3.0, "1": 4.0, "2": 8.0}
    assert summary["metrics/gan.json:n_fake"]["std"] == 0.0
    one = seeds.summarise({0: {"a": 1.0}, 1: {}})["a"]
    assert one["n"] == 1 and one["std"] is None


def test_mean_std_is_printed_to_the_std_two_significant_digits():
    assert seeds.format_mean_std(3.4012, 0.26) == "3.40 ± 0.26"
    assert seeds.format_mean_std(-11246.3, 131.0) == "-11246 ± 131"
    assert seeds.format_mean_std(0.0261, 0.0049) == "0.0261 ± 0.0049"
    assert seeds.format_mean_std(2.0, 0.0) == "2 ± 0"
    assert seeds.format_mean_std(2.0, None) == "2"


def test_queue_only_queues_and_does_not_wait(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(seeds, "tree_state", lambda: "")
    monkeypatch.setattr(seeds, "queue", lambda names, *a: calls.append(sorted(names.values())) or list(names.values()))
    monkeypatch.setattr(seeds, "run_queued", lambda *a, **k: pytest.fail("waited for the queue"))
    seeds.main(["train_vae.train.seed", "--name", "v", "--queue-only", "--params", str(ROOT / "params.yaml"),
                "--out", str(tmp_path / "s.json")])
    [names] = calls
    assert len(names) == 3 and all(n.startswith("v-") for n in names)
    assert not (tmp_path / "s.json").exists()
