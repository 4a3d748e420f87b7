"""The family registry and the generic train stage's command line: every family, no per-family code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from components import families
from components.train.family import COMMON_OUTPUTS, Family, steady_rate, without_wall_clock
from pipelines import cli, train
from pipelines.config import load_params

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", families.names())
def test_every_family_is_a_spec_with_its_stage_and_params_group(name):
    family = families.get(name)
    assert isinstance(family, Family) and family.name == name and family.stage == families.stage_of(name)
    assert family.stage == {"scst": "finetune_captioner"}.get(name, f"train_{name}")
    params = load_params(ROOT / "params.yaml", profile="smoke")
    cfg = getattr(params, family.stage)  # the stage's params group exists, of the registered class
    assert isinstance(cfg, families.config_of(name))
    assert cfg.train.threads_per_worker >= 1 and cfg.scaling.num_workers >= 1
    assert set(COMMON_OUTPUTS) <= set(family.default_outputs())
    assert "epoch" in family.curve_keys
    assert families.module_of(name) == family.export.__module__


def test_an_unknown_family_names_the_known_ones():
    with pytest.raises(KeyError, match="unknown model family 'diffusion' .*captioner, scst, vae, gan"):
        families.get("diffusion")


def test_the_stage_options_come_from_the_family():
    family, args = train.parse_args(["--family", "captioner", "--features", "f", "--predictions", "p"])
    assert family is families.get("captioner")
    assert (args.features, args.predictions, args.model) == (Path("f"), Path("p"), Path("models/captioner"))
    family, args = train.parse_args(["--family", "vae"])
    assert (args.prepared, args.reports, args.metrics) == (Path("data/prepared"), Path("reports/vae"),
                                                           Path("metrics/train_vae.json"))
    with pytest.raises(SystemExit):  # the VAE reads no features
        train.parse_args(["--family", "vae", "--features", "f"])
    with pytest.raises(SystemExit):
        train.parse_args(["--family", "nope"])


def test_the_cli_runs_each_family_stage_through_the_generic_stage(capsys):
    for name in families.names():
        stage = families.stage_of(name)
        with pytest.raises(SystemExit) as exit_info:
            cli.main([stage, "--help"])
        assert exit_info.value.code == 0
        assert f"usage: capsynth {stage}" in capsys.readouterr().out


def test_help_lists_every_stage_and_imports_no_torch():
    code = ("import sys; from pipelines import cli\n"
            "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("NO-TORCH")
    for stage in ("prepare", "features", *(families.stage_of(n) for n in families.names()), "evaluate", "pascal50s", "register"):
        assert stage in out


def test_summary_helpers():
    assert without_wall_clock({"train_seconds": 1.0, "images_per_s": 2.0, "fid": 3.0}) == {"fid": 3.0}
    history = [{"r": 10.0}, {"r": 20.0}, {"r": 40.0}]
    assert steady_rate(history, "r") == 30.0  # the first epoch is warm-up
    assert steady_rate(history[:1], "r") == 10.0


def test_evaluate_options_come_from_the_families(capsys):
    from pipelines import evaluate

    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert evaluate.evaluated() == families.names()  # every family evaluates
    for name in evaluate.evaluated():
        assert f"--{name}-metrics" in out
        assert all("--{}-{}".format(*evaluate.owned(name, ref)) in out for ref in families.get(name).eval_outputs)
        assert callable(families.get(name).evaluator())
    # another family's output is one option of its owner: the imagine family reads the captioner's model
    assert evaluate.owned("imagine", "captioner.model") == ("captioner", "model")
    assert out.count("\n  --captioner-model ") == 1  # one option, however many families read it


def test_report_sections_of_one_id_merge_in_first_appearance_order():
    from components.report import Section
    from pipelines.evaluate import merge_sections

    merged = merge_sections([Section("captions", "Captions", "c"), Section("samples", "Samples", "v"),
                             Section("interpolations", "Interpolations", "vi"), Section("samples", "Samples", "g")])
    assert [(s.id, s.body) for s in merged] == [("captions", "c"), ("samples", "vg"), ("interpolations", "vi")]


def test_identical_runs_train_one_after_the_other(tmp_path):
    """Two experiments needing the same Ray run: the second waits for the first's lock."""
    import threading
    import time

    order = []

    def run(tag: str, hold: float) -> None:
        with train.run_lock(tmp_path, "gan-abc"):
            order.append(f"{tag} in")
            time.sleep(hold)
            order.append(f"{tag} out")

    first = threading.Thread(target=run, args=("a", 0.5))
    first.start()
    time.sleep(0.1)
    second = threading.Thread(target=run, args=("b", 0.0))
    second.start()
    first.join()
    second.join()
    assert order == ["a in", "a out", "b in", "b out"]
    with train.run_lock(tmp_path, "gan-other"):  # another run does not wait
        with train.run_lock(tmp_path, "vae-abc"):
            pass


def test_evaluate_can_take_a_subset_of_the_families(capsys):
    from pipelines import evaluate

    with pytest.raises(SystemExit):
        evaluate.main(["--families", "imagine", "--help"])
    out = capsys.readouterr().out
    assert "--imagine-model" in out and "--captioner-model" in out and "--imagine-metrics" in out
    assert "--vae-model" not in out and "--captioner-metrics" not in out
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--families", "nope"])
    assert exit_info.value.code == 2
