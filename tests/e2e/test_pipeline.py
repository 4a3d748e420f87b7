"""End to end: `dvc repro` on the smoke profile in a throwaway copy of the repo."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from components.features.store import load_features
from pipelines.config import write_profile_params

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BIN = Path(sys.executable).parent


def _run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def smoke_repo(tmp_path_factory, request) -> Path:
    """Tracked and untracked-not-ignored files of the repo, as a fresh git repo on smoke params."""
    src = Path(request.config.rootpath)
    dst = tmp_path_factory.mktemp("repo")
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                           cwd=src, capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        if (src / rel).is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, dst / rel)
    write_profile_params(src / "params.yaml", "smoke", dst / "params.yaml")
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "smoke"]):
        _run(cmd, dst)
    return dst


def _tree_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_dvc_repro_runs_prepare(smoke_repo):
    _run(["dvc", "repro"], smoke_repo)
    prepared = smoke_repo / "data" / "prepared"
    images = pq.read_table(prepared / "images.parquet").to_pylist()
    captions = pq.read_table(prepared / "captions.parquet").to_pylist()
    report = json.loads((smoke_repo / "reports" / "prepare.json").read_text())
    assert report["counts"]["images_kept"] == len(images) > 0
    assert {r["split"] for r in images} == {"train", "val", "test"}
    assert all((smoke_repo / r["path"]).is_file() and not os.path.isabs(r["path"]) for r in images)
    assert len(captions) == 5 * len(images)
    assert (prepared / "synthetic" / "scenes.parquet").is_file()
    # nothing left half-written beside the outputs
    assert not [p.name for p in prepared.parent.iterdir() if p.name.startswith(".")]
    # features of every kept image, in the images table's order
    features = load_features(smoke_repo / "data" / "features")
    assert features.image_ids.tolist() == [r["image_id"] for r in images]
    assert features.grid.shape[0] == features.pooled.shape[0] == len(images)
    assert features.meta["weights"] == "random" and len(features.meta["weights_sha256"]) == 64
    # a second repro has nothing to do
    assert "didn't change" in _run(["dvc", "repro"], smoke_repo).stdout
    # metrics show reads the report
    assert "images_kept" in _run(["dvc", "metrics", "show"], smoke_repo).stdout


def test_repro_groups_its_stage_runs_and_registers_three_models(smoke_repo):
    from mlflow import MlflowClient

    report_path = smoke_repo / "reports" / "register.json"
    if not report_path.exists():
        _run(["dvc", "repro"], smoke_repo)
    report = json.loads(report_path.read_text())
    client = MlflowClient(tracking_uri=f"sqlite:///{smoke_repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("capsynth").experiment_id
    runs = client.search_runs([experiment])
    [parent] = [r for r in runs if r.data.tags["capsynth.stage"] == "pipeline"]
    stages = {r.data.tags["capsynth.stage"] for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert {"prepare", "features", "train_captioner", "train_vae", "train_gan", "evaluate", "register"} <= stages
    for kind, name in (("captioner", "capsynth-captioner"), ("vae", "capsynth-vae"), ("gan", "capsynth-gan")):
        version = client.get_model_version(name, report[kind]["version"])
        assert version.aliases and set(version.aliases) <= {"champion", "challenger"}
    assert client.get_model_version_by_alias("capsynth-captioner", "champion").version is not None


def test_evaluate_writes_metrics_report_and_plots(smoke_repo):
    if not (smoke_repo / "reports" / "index.html").exists():
        _run(["dvc", "repro"], smoke_repo)
    metrics = {m: json.loads((smoke_repo / "metrics" / f"{m}.json").read_text()) for m in ("captioner", "vae", "gan")}
    cap, vae, gan = metrics["captioner"], metrics["vae"], metrics["gan"]
    for key in ("bleu_1", "bleu_4", "rouge_l", "cider", "exact_scene_accuracy", "object_f1", "relation_f1"):
        assert isinstance(cap[key], float), key
    assert cap["split"] == "test" and cap["n_images"] > 0
    assert set(cap["unavailable"]) == {k for k in ("meteor", "spice") if cap[k] is None}
    assert all(name in cap["unavailable_reasons"] for name in cap["unavailable"])
    assert vae["test_elbo"] < 0 and vae["test_nll_iwae"] > 0 and vae["test_bits_per_dim"] > 0
    for m in (vae, gan):
        assert m["fid"] >= 0 and m["n_fake"] == 16 and m["n_real"] == cap["n_images"]
        assert m["feature_network"].startswith(("in_domain:", "inception:"))
    assert 0 <= gan["precision"] <= 1 and 0 <= gan["recall"] <= 1
    assert (gan["inception_score"] is None) == gan["feature_network"].startswith("in_domain:")
    page = (smoke_repo / "reports" / "index.html").read_text()
    assert all(f'<section id="{s}">' in page for s in ("metrics", "captions", "samples", "interpolations"))
    # the training summaries keep their own files
    assert all((smoke_repo / "metrics" / f"train_{m}.json").is_file() for m in ("captioner", "vae", "gan"))
    shown = _run(["dvc", "metrics", "show"], smoke_repo).stdout
    assert all(f"metrics/{m}.json" in shown for m in ("captioner", "vae", "gan")) and "cider" in shown
    _run(["dvc", "plots", "show", "-o", "dvc_plots"], smoke_repo)
    assert (smoke_repo / "dvc_plots" / "index.html").is_file()
    # a param change: only evaluate reruns, and `dvc metrics diff` reports the change against the commit
    _run(["git", "add", "-A"], smoke_repo)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline"], smoke_repo)
    out = _run(["dvc", "exp", "run", "-S", "evaluate.num_fake=20"], smoke_repo).stdout
    assert "Running stage 'evaluate'" in out and "Running stage 'train_gan'" not in out
    diff = _run(["dvc", "metrics", "diff"], smoke_repo).stdout
    assert "metrics/gan.json" in diff and "n_fake" in diff


# a real behaviour change in one component of each training stage (the KL example among them)
CODE_CHANGES = {
    "train_vae": ("components/generative/losses.py", "return 0.5 * (mu.pow(2) + logvar.exp()",
                  "return 5.0 * (mu.pow(2) + logvar.exp()"),
    # the fake term weighted twice (a margin change alone would not change the gradient near 0)
    "train_gan": ("components/generative/losses.py", "+ F.relu(1.0 + fake_logits).mean()",
                  "+ 2.0 * F.relu(1.0 + fake_logits).mean()"),
    "train_captioner": ("components/captioning/losses.py", "    loss = ce\n",
                        "    loss = ce + 0.1 * output.logits.float().pow(2).mean()\n"),
}
MODEL_DIRS = {"train_vae": "models/vae", "train_gan": "models/gan", "train_captioner": "models/captioner"}


def _weights(repo: Path, stage: str) -> bytes:
    return b"".join(p.read_bytes() for p in sorted((repo / MODEL_DIRS[stage]).glob("*.pt")))


def test_a_code_change_in_a_training_component_retrains_with_new_weights(smoke_repo):
    """`dvc repro` after a behaviour change: each training stage reruns and trains afresh (its Ray run
    has a new identity), so its weights differ; prepare and features do not rerun. (Before the tests
    below that change prepare's params.)"""
    if not (smoke_repo / "models" / "captioner").exists():
        _run(["dvc", "repro"], smoke_repo)
    before = {stage: _weights(smoke_repo, stage) for stage in CODE_CHANGES}
    originals = {path: (smoke_repo / path).read_text() for path, _, _ in CODE_CHANGES.values()}
    try:
        for path, old, new in CODE_CHANGES.values():
            text = (smoke_repo / path).read_text()
            assert old in text, f"{path} no longer has {old!r}: update the test's edit"
            (smoke_repo / path).write_text(text.replace(old, new))
        out = _run(["dvc", "repro"], smoke_repo).stdout
        for stage in CODE_CHANGES:
            assert f"Running stage '{stage}'" in out, stage
            assert _weights(smoke_repo, stage) != before[stage], f"{stage} wrote its old weights again"
        assert "Running stage 'prepare'" not in out and "Running stage 'features'" not in out
    finally:
        for path, text in originals.items():
            (smoke_repo / path).write_text(text)


def test_temp_experiment_lands_in_the_projects_store_with_its_name(smoke_repo):
    """`dvc exp run --temp` runs in a throwaway copy under .dvc/tmp/exps; its run is in the repo's store."""
    from mlflow import MlflowClient

    if not (smoke_repo / "models" / "vae").exists():
        _run(["dvc", "repro"], smoke_repo)
    client = MlflowClient(tracking_uri=f"sqlite:///{smoke_repo / 'mlflow.db'}")

    def vae_runs():
        experiment = client.get_experiment_by_name("capsynth").experiment_id
        return client.search_runs([experiment], filter_string="tags.`capsynth.stage` = 'train_vae'")

    known = {r.info.run_id for r in vae_runs()}
    _run(["dvc", "exp", "run", "--temp", "-n", "kl-temp", "-S", "train_vae.train.epochs=3", "train_vae"], smoke_repo)
    [new] = [r for r in vae_runs() if r.info.run_id not in known]
    assert new.data.tags["capsynth.dvc_experiment"] == "kl-temp" and new.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(new.info.run_id, "train_elbo")) == [0, 1, 2]
    assert any((smoke_repo / "ray_results").glob("vae-*"))  # the temp workspace's checkpoints were kept


def test_rerun_from_scratch_is_byte_identical(smoke_repo):
    prepared = smoke_repo / "data" / "prepared"
    if not prepared.exists():
        _run(["dvc", "repro"], smoke_repo)
    before = _tree_hash(prepared)
    _run(["dvc", "repro", "--force", "prepare"], smoke_repo)
    assert _tree_hash(prepared) == before


def test_exp_run_set_param_and_typo(smoke_repo):
    _run(["dvc", "exp", "run", "-S", "prepare.seed=7"], smoke_repo)
    report = json.loads((smoke_repo / "reports" / "prepare.json").read_text())
    assert report["params"]["seed"] == 7
    # DVC refuses a key params.yaml lacks ...
    proc = _run(["dvc", "exp", "run", "-S", "prepare.seeed=7"], smoke_repo, check=False)
    assert proc.returncode != 0 and "prepare.seeed" in proc.stderr
    # ... and when forced in with '+', the stage's strict config refuses it
    proc = _run(["dvc", "exp", "run", "-S", "+prepare.seeed=7"], smoke_repo, check=False)
    assert proc.returncode != 0
    assert "unknown key 'prepare.seeed'" in proc.stdout + proc.stderr

