"""The recipes (``profiles/<recipe>.yaml``, README §Recipes) rehearsed end to end on tiny data in their real
file formats: prepare → features → train_captioner → finetune_captioner → evaluate → register, as dvc.yaml
runs them (each stage's ``main`` with the arguments of its ``cmd`` in dvc.yaml, in-process on the session's
Ray instance), with params = params.yaml + the recipe + :data:`SHRINK`, which changes sizes only.

So a recipe that rots fails here: a renamed or mistyped key (params validation), a dataset loader that no
longer reads the recipe's format (prepare's counts), a backbone or stage whose map is not the recipe's grid
(the features' shape), an SCST reward that needs synthetic scene tables (finetune_captioner), a stage whose
outputs or CLI moved (dvc.yaml's commands are the ones run). What it cannot check is the published
figures: they need the real data, ImageNet weights and a GPU (README §Recipes).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import re
import shlex
import signal
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from ruamel.yaml import YAML

from components.captioning.evaluation import SEMANTIC_KEYS
from components.config import deep_merge, flatten, to_dict
from components.data.text import SPECIAL_TOKENS
from components.features.backbones import get_spec
from components.features.store import load_features
from pipelines import config as pconfig
from tests import fixtures_formats as ff

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
RECIPES = ("coco_karpathy", "show_attend_tell_vgg16", "flickr8k", "flickr30k")
FAMILIES = ("captioner", "scst")  # the captioning families a recipe trains, evaluates and registers
STAGES = ("prepare", "features", "train_captioner", "finetune_captioner", "evaluate", "register")
STAGE_TIMEOUT_S = 240  # one stage on a busy 2-core machine; a hang fails the test instead of the CI job

# What the rehearsal changes in a recipe: sizes only, and where the data is (the fixture's files, set per
# recipe in `recipe_params`). Everything else is the recipe's own: dataset and loader, max caption length,
# backbone and stage, decoder architecture, dropout, lr and schedule, attention penalty, beam size, the
# SCST reward, baseline and K.
INPUT_SIZE = 64
SHRINK: dict[str, Any] = {
    "prepare.min_word_count": 1,  # a few dozen captions: keep every word
    "prepare.num_workers": 1,
    "features.weights": "random",  # ImageNet weights are not on CI machines (never downloaded)
    "features.input_size": INPUT_SIZE,
    # features.grid_size: the whole map at INPUT_SIZE, as the recipe attends its whole map (`_shrunk_grid`)
    "features.batch_size": 16,
    "features.num_actors": 1,
    "features.threads_per_actor": 1,
    "features.num_decode_tasks": 1,
    "features.device": "cpu",
    "train_captioner.model.embed_dim": 16,
    "train_captioner.model.hidden_dim": 16,
    "train_captioner.model.attention_dim": 16,
    "train_captioner.train.epochs": 1,
    "train_captioner.train.batch_size": 16,
    "train_captioner.train.threads_per_worker": 1,
    "finetune_captioner.train.epochs": 1,
    "finetune_captioner.train.batch_size": 8,
    "finetune_captioner.train.threads_per_worker": 1,
    "evaluate.report_images": 2,
}


def _shrunk_grid(backbone: str, stage: int) -> int:
    """The side of the backbone's map at INPUT_SIZE px (shapes only, on the meta device)."""
    import torch

    trunk = get_spec(backbone)(grid_size=1, stage=stage, device="meta").trunk
    return int(trunk(torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE, device="meta")).shape[-1])


# --- the fixture data, in each recipe's real format ---------------------------------------------------

WORDS = ("a dog runs on the grass", "two cats sleep near the door", "a red bus drives down the street",
         "a man rides a bike", "the girl holds a kite", "a plate of food on a table")
# one caption longer than the recipes' cut at 16 words: its tail words must not reach the vocabulary
LONG = "a small boy in a blue shirt plays with a ball in the park near his house while zebra ostrich watch"


def _captions(k: int) -> list[str]:
    """Two captions of image ``k``; lower-case words and single spaces, so every tokenizer splits them alike."""
    return [WORDS[k % len(WORDS)], f"{WORDS[(k + 1) % len(WORDS)]} again"]


def _write_coco(root: Path) -> tuple[list[dict], str, dict]:
    """captions_{train,val}2014.json and Karpathy's dataset_coco.json: 14 + 12 images (2 left out of the split)."""
    subsets = {"train2014": range(1, 15), "val2014": range(101, 113)}
    sources, annotation_id = [], 0
    for subset, ids in subsets.items():
        images = [{"id": i, "file_name": f"COCO_{subset}_{i:012d}.jpg", "width": 20, "height": 16} for i in ids]
        annotations = []
        for i in ids:
            for caption in _captions(i):
                annotation_id += 1
                annotations.append({"id": annotation_id, "image_id": i, "caption": caption})
        if subset == "train2014":
            annotations.append({"id": 9999, "image_id": 1, "caption": LONG})
        split = "train" if subset == "train2014" else "val"
        source = ff.write_coco(root, subset=subset, split=split, images=images, annotations=annotations)
        sources.append({"file": source.file, "images_dir": source.images_dir, "split": source.split})
    # Karpathy: train2014 -> train (13, 14 not listed); val2014 -> 4 restval, 4 val, 4 test; 555555 not on disk
    splits = {i: "train" for i in range(1, 13)}
    splits |= dict(zip(range(101, 113), ["restval"] * 4 + ["val"] * 4 + ["test"] * 4))
    splits[555555] = "test"
    split_file = ff.write_karpathy_split_file(root, splits)
    expected = {"images": {"train": 16, "val": 4, "test": 4}, "skipped": {"not_in_split_file": 2},
                "train_ids": [*range(1, 13), *range(101, 105)], "test_ids": list(range(109, 113))}
    return sources, str(split_file), expected


def _write_karpathy(root: Path, dataset: str, image_folder: str) -> tuple[list[dict], dict]:
    """Karpathy's dataset_<dataset>.json: 24 images, 14 train + 2 restval / 4 val / 4 test."""
    splits = ["train"] * 14 + ["restval"] * 2 + ["val"] * 4 + ["test"] * 4
    entries, sentid = [], 0
    for k, split in enumerate(splits):
        sentences = _captions(k) + ([LONG] if k == 0 else [])
        entries.append(ff.karpathy_entry(k, f"{1000 + k}_{k:04x}.jpg", split, sentences, first_sentid=sentid))
        sentid += len(sentences)
    source = ff.write_karpathy(root, dataset=dataset, entries=entries, image_folder=image_folder)
    expected = {"images": {"train": 16, "val": 4, "test": 4}, "skipped": {},
                "train_ids": list(range(16)), "test_ids": list(range(20, 24))}
    return [{"file": source.file, "images_dir": source.images_dir}], expected


@pytest.fixture(scope="module")
def fixture_data(tmp_path_factory) -> dict[str, tuple[dict, dict]]:
    """Per recipe dataset: (prepare's source keys, what prepare must find). Written once for all recipes."""
    root = tmp_path_factory.mktemp("recipe_data")
    coco_sources, split_file, coco_expected = _write_coco(root / "coco")
    data = {"coco": ({"sources": coco_sources, "split_file": split_file}, coco_expected)}
    for dataset, folder in (("flickr8k", "Flicker8k_Dataset"), ("flickr30k", "flickr30k-images")):
        sources, expected = _write_karpathy(root / dataset, dataset, folder)
        data[dataset] = ({"sources": sources, "split_file": ""}, expected)
    return data


# --- running the stages as dvc.yaml does ------------------------------------------------------------

def _unflatten(flat: Mapping[str, Any]) -> dict:
    nested: dict = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def recipe_params(recipe: str, data: dict, out: Path) -> Any:
    """params.yaml + profiles/<recipe>.yaml + SHRINK + the fixture's sources, written to ``out``, validated."""
    yaml = YAML(typ="safe", pure=True)
    base = yaml.load((REPO / "params.yaml").read_text())
    merged = deep_merge(base, yaml.load((pconfig.PROFILES_DIR / f"{recipe}.yaml").read_text()), source=recipe)
    features = merged["features"]
    shrink = {**SHRINK, "features.grid_size": _shrunk_grid(features["backbone"], features["stage"]),
              **{f"prepare.{k}": v for k, v in data.items()}}
    merged = deep_merge(merged, _unflatten(shrink), source="the rehearsal's shrink")
    writer = YAML()
    writer.default_flow_style = False
    with open(out, "w") as f:
        writer.dump(merged, f)
    return pconfig.load_params(out)


def dvc_commands(stages: tuple[str, ...] = STAGES) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Each stage's ``cmd`` of dvc.yaml as ``[module, *args]`` (``${paths.*}`` resolved), and the paths."""
    spec = YAML(typ="safe", pure=True).load((REPO / "dvc.yaml").read_text())
    paths = next(v["paths"] for v in spec["vars"] if "paths" in v)
    commands = {}
    for stage in stages:
        cmd = re.sub(r"\$\{paths\.(\w+)\}", lambda m: paths[m.group(1)], spec["stages"][stage]["cmd"])
        python, flag, module, *args = shlex.split(cmd)
        assert (python, flag) == ("python", "-m") and module.startswith("pipelines."), cmd
        commands[stage] = [module, *args]
    return commands, paths


def only_options(args: list[str], keep: set[str]) -> list[str]:
    """The ``--option value`` pairs of ``args`` whose option is in ``keep`` (each must be there)."""
    pairs = dict(zip(args[::2], args[1::2]))
    assert all(a.startswith("--") for a in args[::2]) and keep <= set(pairs), (keep - set(pairs), args)
    return [x for option in pairs if option in keep for x in (option, pairs[option])]


@contextlib.contextmanager
def time_limit(seconds: int, what: str) -> Iterator[None]:
    """Fail with a clear message when the block runs longer than ``seconds`` (SIGALRM, main thread)."""

    def expire(signum, frame):
        raise TimeoutError(f"{what} ran longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run_stage(stage: str, args: list[str]) -> None:
    """``python -m <module> <args>`` in this process: the module's ``main(args)``, within the time limit."""
    module, *argv = args
    with time_limit(STAGE_TIMEOUT_S, stage):
        try:
            importlib.import_module(module).main(argv)
        except SystemExit as exit_:  # a stage's input error: exit code 2 and one line on stderr
            pytest.fail(f"stage {stage} exited with {exit_.code} (its message is in the captured stderr)")


# --- the rehearsal --------------------------------------------------------------------------------

@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_runs_end_to_end_on_its_real_format(recipe, fixture_data, ray_session, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from components.captioning.io import load_model_dir

    monkeypatch.chdir(tmp_path)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"  # a throwaway MLflow store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    for var in ("MLFLOW_EXPERIMENT_ID", "CAPSYNTH_PIPELINE_RUN", "DVC_ROOT"):
        monkeypatch.delenv(var, raising=False)
    # evaluate as on a machine without Java: METEOR's Java start costs ~15 s a call, two calls a recipe
    # (the e2e test scores with Java); the other COCO metrics and the pure-Python PTB tokenizer still run
    from components.metrics import captions as caption_metrics
    monkeypatch.setattr(caption_metrics, "find_java", lambda: None)
    profile = YAML(typ="safe", pure=True).load((pconfig.PROFILES_DIR / f"{recipe}.yaml").read_text())
    data, expected = fixture_data["coco" if profile["prepare"]["dataset"] == "coco" else profile["prepare"]["dataset"]]
    params = recipe_params(recipe, data, tmp_path / "params.yaml")
    # the shrink changed only the keys it lists: every other key of the recipe is the recipe's own
    changed = set(SHRINK) | {"features.grid_size", "prepare.sources", "prepare.split_file"}
    full = pconfig.load_params(REPO / "params.yaml", profile=recipe)
    assert {k for k, v in flatten(to_dict(params)).items() if flatten(to_dict(full))[k] != v} <= changed

    commands, paths = dvc_commands()
    evaluate = importlib.import_module("pipelines.evaluate")
    commands["evaluate"] = ["pipelines.evaluate", "--families", *FAMILIES, *only_options(
        commands["evaluate"][1:], {"--params", "--prepared", "--report"} | {f"--{f}-metrics" for f in FAMILIES}
        | {f"--{owner}-{output}" for owner, output in evaluate.training_outputs(list(FAMILIES))})]
    commands["register"] = ["pipelines.register", "--families", *FAMILIES, *only_options(
        commands["register"][1:], {"--params", "--report"} | {f"--{f}{s}" for f in FAMILIES for s in ("", "-metrics")})]
    for stage in STAGES:
        run_stage(stage, commands[stage])

    # prepare: the recipe's loader read the fixture's format and split
    prepared = Path(paths["prepared"])
    report = json.loads(Path(paths["prepare_report"]).read_text())
    assert report["dataset"] == params.prepare.dataset
    assert {s: c.get("images", 0) for s, c in report["splits"].items()} == expected["images"]
    assert report["skipped_counts"] == expected["skipped"]
    assert report["counts"]["captions_truncated"] == 1  # the recipe's cut (16 words), not shrunk
    images = pq.read_table(prepared / "images.parquet").to_pylist()
    assert sorted(r["image_id"] for r in images if r["split"] == "test") == expected["test_ids"]
    captions = pq.read_table(prepared / "captions.parquet").to_pylist()
    train_words = {w for r in captions if r["split"] == "train" for w in r["caption"].split()}
    vocab = json.loads((prepared / "vocab.json").read_text())
    assert vocab["max_caption_length"] == params.prepare.max_caption_length == 16
    assert set(vocab["tokens"]) == set(SPECIAL_TOKENS) | train_words
    assert "zebra" not in vocab["tokens"] and "again" in vocab["tokens"]

    # features: the recipe's backbone and stage, its whole map at the shrunk input size
    features = load_features(paths["features"])
    meta, f = features.meta, params.features
    grid = _shrunk_grid(f.backbone, f.stage)
    assert (meta["backbone"], meta["stage"], meta["weights"], meta["input_size"]) == (f.backbone, f.stage, "random", 64)
    assert meta["feature_map_size"] == meta["grid_size"] == grid
    channels = get_spec(f.backbone).stage_channels(f.stage)
    assert features.grid.shape == (len(images), grid * grid, channels)
    assert features.image_ids.tolist() == [r["image_id"] for r in images]

    # the cross-entropy and the SCST models, their predictions and metrics; no semantic scores on real data
    for family, model_dir, predictions in (("captioner", paths["captioner"], paths["captioner_predictions"]),
                                           ("scst", paths["scst"], paths["scst_predictions"])):
        loaded = load_model_dir(model_dir)
        assert loaded.extra["features"]["backbone"] == f.backbone
        predicted = json.loads((Path(predictions) / "test.json").read_text())
        assert len(predicted) == len(expected["test_ids"])
        metrics = json.loads(Path(paths[f"{family}_metrics"]).read_text())
        assert metrics["split"] == "test" and metrics["n_images"] == len(expected["test_ids"])
        for key in ("bleu_1", "bleu_4", "rouge_l", "cider"):
            assert isinstance(metrics[key], float), (family, key)
        assert "meteor" in metrics["unavailable"]  # no Java here (above)
        assert all(metrics.get(key) is None for key in SEMANTIC_KEYS), family
    scst = json.loads(Path(paths["scst_train_metrics"]).read_text())
    assert scst["reward"] == params.finetune_captioner.train.reward == "cider_d" and scst["epochs_run"] == 1

    # register: both models are versions of capsynth-captioner in the throwaway store
    registered = json.loads(Path(paths["register_report"]).read_text())
    assert set(registered) == set(FAMILIES)
    client = MlflowClient(tracking_uri=store)
    for family in FAMILIES:
        version = client.get_model_version(registered[family]["name"], registered[family]["version"])
        assert version.name == "capsynth-captioner"


def test_pascal50s_stage_on_its_real_format(tmp_path, monkeypatch):
    """The ``pascal50s`` stage as dvc.yaml runs it, on judged pairs in the real ``pyCIDErConsensus`` layout."""
    from mlflow import MlflowClient

    from components.metrics import captions as caption_metrics

    monkeypatch.chdir(tmp_path)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    for var in ("MLFLOW_EXPERIMENT_ID", "CAPSYNTH_PIPELINE_RUN", "DVC_ROOT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(caption_metrics, "find_java", lambda: None)  # as the recipes above; METEOR: unit test
    folder = ff.write_pascal50s_consensus(tmp_path / "pascal")
    yaml = YAML(typ="safe", pure=True)
    params = yaml.load((REPO / "params.yaml").read_text())
    params["pascal50s"].update(dir=str(folder), num_refs=2)
    writer = YAML()
    with open("params.yaml", "w") as f:
        writer.dump(params, f)
    commands, paths = dvc_commands(("pascal50s",))
    run_stage("pascal50s", commands["pascal50s"])

    result = json.loads(Path(paths["pascal50s_metrics"]).read_text())
    assert result["skipped"] is False and result["n_pairs"]["all"] == len(ff.PASCAL50S_PAIRS)
    assert (result["refs_per_pair"], result["judgements_per_pair"]) == (2, 4)
    for metric in ("bleu_1", "bleu_4", "rouge_l", "cider"):
        assert set(result["accuracy"][metric]) == {"HC", "HI", "HM", "MM", "all"}
    [run] = MlflowClient(tracking_uri=store).search_runs(
        [MlflowClient(tracking_uri=store).get_experiment_by_name("capsynth").experiment_id],
        filter_string="tags.`capsynth.stage` = 'pascal50s'")
    assert run.data.metrics["accuracy_cider_all"] == pytest.approx(result["accuracy"]["cider"]["all"])
