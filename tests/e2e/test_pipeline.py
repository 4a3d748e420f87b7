"""End to end: `dvc repro` on the smoke profile in a throwaway copy of the repo."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from ruamel.yaml import YAML

from components.features.store import load_features
from components.train.family import WALL_CLOCK_SUFFIXES
from pipelines.config import write_profile_params

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BIN = Path(sys.executable).parent


def _env() -> dict[str, str]:
    """The environment of the commands run in the throwaway repo: the venv's tools first, no analytics."""
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}


def _run(cmd: list[str], cwd: Path, check: bool = True, timeout: float = 1500) -> subprocess.CompletedProcess:
    """Run a command in the throwaway repo; a command that hangs fails the test after ``timeout`` s."""
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def _start_queue(repo: Path, jobs: int) -> None:
    """``dvc queue start -j jobs``, its output in ``.dvc/tmp/queue-start.log``, not a pipe.

    The queue workers it spawns inherit its stdout and stderr; with a pipe, a worker that outlives the
    queue (a celery worker idle in the broker's poll loop) kept the pipe open and ``subprocess.run``
    waited for it until the test's timeout. (No ``dvc queue stop`` after: the filesystem broker keeps the
    broadcast, and it would stop the workers a later test starts, pipelines/seeds.py.)"""
    log = repo / ".dvc" / "tmp" / "queue-start.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.run(["dvc", "queue", "start", "-j", str(jobs)], cwd=repo, env=_env(),
                              stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, timeout=300)
    assert proc.returncode == 0, f"dvc queue start failed ({proc.returncode}):\n{log.read_text()[-3000:]}"


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
    first = _run(["dvc", "repro"], smoke_repo)
    # a console a person can read: each stage's start and end, one line per epoch, no Ray noise
    console = first.stdout + first.stderr
    for stage in ("prepare", "features", "train_captioner", "finetune_captioner", "train_vae", "train_gan",
                  "train_imagine", "evaluate", "pascal50s", "register"):
        assert f"capsynth {stage}: started" in console and f"capsynth {stage}: done in" in console, stage
    params = YAML(typ="safe").load(smoke_repo / "params.yaml")
    for stage, summary in {"train_captioner": "train_captioner", "finetune_captioner": "train_scst",
                           "train_vae": "train_vae", "train_gan": "train_gan", "train_imagine": "train_imagine"}.items():
        planned = params[stage]["train"]["epochs"]
        ran = json.loads((smoke_repo / "metrics" / f"{summary}.json").read_text())["epochs_run"]
        lines = [line for line in console.splitlines() if f"{stage}  epoch " in line]
        assert len(lines) == ran and f"epoch {ran:>3}/{planned}" in lines[-1], (stage, lines)
    assert "Failed to query Ray Train Controller" not in console
    assert "TrainingReport(" not in console and "Checkpoint successfully created" not in console
    prepared = smoke_repo / "data" / "prepared"
    images = pq.read_table(prepared / "images.parquet").to_pylist()
    captions = pq.read_table(prepared / "captions.parquet").to_pylist()
    report = json.loads((smoke_repo / "reports" / "prepare.json").read_text())
    assert report["counts"]["images_kept"] == len(images) > 0
    assert {r["split"] for r in images} == {"train", "val", "test"}
    assert all((smoke_repo / r["path"]).is_file() and not os.path.isabs(r["path"]) for r in images)
    assert len(captions) == 5 * len(images)
    assert (prepared / "synthetic" / "scenes.parquet").is_file()
    # Pascal-50S's files are not shipped: the stage says it skipped, in its metrics file
    assert json.loads((smoke_repo / "metrics" / "pascal50s.json").read_text())["skipped"] is True
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


def test_repro_groups_its_stage_runs_and_registers_every_family(smoke_repo):
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
    assert {"prepare", "features", "train_captioner", "finetune_captioner", "train_vae", "train_gan", "train_imagine",
            "evaluate", "register"} <= stages
    for kind in ("captioner", "vae", "gan", "imagine"):
        name = f"capsynth-{kind}"
        version = client.get_model_version(name, report[kind]["version"])
        assert version.aliases or kind == "captioner"  # the SCST model may have taken the captioner's champion
        assert set(version.aliases) <= {"champion", "challenger"}
    # the SCST-fine-tuned model is a version of the captioner's registered model, judged against it
    assert report["scst"]["name"] == "capsynth-captioner" and report["scst"]["version"] != report["captioner"]["version"]
    champion = str(client.get_model_version_by_alias("capsynth-captioner", "champion").version)
    assert champion in (report["captioner"]["version"], report["scst"]["version"])
    # each stage run names the DVC-tracked data it read, with dvc.lock's digest (the runs table's Dataset column)
    lock = YAML(typ="safe").load(smoke_repo / "dvc.lock")["stages"]
    digest = {o["path"]: o["md5"].removesuffix(".dir") for entry in lock.values() for o in entry.get("outs", [])}
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    for stage, want in {"features": {"data/prepared"}, "train_captioner": {"data/prepared", "data/features"},
                        "finetune_captioner": {"data/prepared", "data/features", "models/captioner"},
                        "train_vae": {"data/prepared"}}.items():
        [run] = [r for r in children if r.data.tags["capsynth.stage"] == stage]
        got = {d.dataset.name: d.dataset.digest for d in client.get_run(run.info.run_id).inputs.dataset_inputs}
        assert set(got) == want and all(got[p] == digest[p] for p in want), (stage, got)
        if stage.startswith(("train_", "finetune_")):  # Ray Train's full logs, which the console leaves out
            assert client.list_artifacts(run.info.run_id, "logs/ray_train"), stage


def test_evaluate_writes_metrics_report_and_plots(smoke_repo):
    if not (smoke_repo / "reports" / "index.html").exists():
        _run(["dvc", "repro"], smoke_repo)
    metrics = {m: json.loads((smoke_repo / "metrics" / f"{m}.json").read_text())
               for m in ("captioner", "scst", "vae", "gan", "imagine")}
    # the fine-tuned captioner is scored as the cross-entropy one
    assert set(metrics["scst"]) == set(metrics["captioner"]) and metrics["scst"]["n_images"] > 0
    cap, vae, gan, imagine = metrics["captioner"], metrics["vae"], metrics["gan"], metrics["imagine"]
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
    # the conditional generator, read back by the captioner: its consistency beside the judge's own ceiling
    assert imagine["captions"] == 4 and imagine["samples_per_caption"] == 2
    for key in ("object_f1", "relation_f1", "exact_scene_accuracy", "ceiling_object_f1", "diversity", "fid"):
        assert isinstance(imagine[key], float), key
    page = (smoke_repo / "reports" / "index.html").read_text()
    assert all(f'<section id="{s}">' in page
               for s in ("metrics", "captions", "captions_scst", "samples", "interpolations", "imagine"))
    # the training summaries keep their own files
    assert all((smoke_repo / "metrics" / f"train_{m}.json").is_file()
               for m in ("captioner", "scst", "vae", "gan", "imagine"))
    shown = _run(["dvc", "metrics", "show"], smoke_repo).stdout
    assert all(f"metrics/{m}.json" in shown for m in ("captioner", "vae", "gan", "imagine")) and "cider" in shown
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


def _mlflow(repo: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")


def _stage_runs(repo: Path, stage: str) -> list:
    client = _mlflow(repo)
    experiment = client.get_experiment_by_name("capsynth").experiment_id
    return client.search_runs([experiment], filter_string=f"tags.`capsynth.stage` = '{stage}'")


def _wait_for_experiments(repo: Path, names: set[str], timeout_s: float = 900) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = set(_run(["dvc", "exp", "list", "--name-only"], repo).stdout.split())
        if names <= done:
            return
        status = _run(["dvc", "queue", "status"], repo).stdout
        failed = [line for line in status.splitlines() if "Failed" in line and any(n in line for n in names)]
        assert not failed, f"queued experiment failed: {failed}\n" + "\n".join(
            _run(["dvc", "queue", "logs", n], repo, check=False).stdout[-3000:] for n in names)
        time.sleep(5)
    raise AssertionError(f"queued experiments {sorted(names)} not done in {timeout_s} s:\n{status}")


def test_two_queued_experiments_run_at_once_into_the_projects_store(smoke_repo):
    """`dvc exp run --queue` twice, `dvc queue start -j 2`: both run at the same time in DVC's temporary
    workspaces, and both land in the repository's SQLite store with their names and one history each."""
    if not (smoke_repo / "data" / "prepared").exists():
        _run(["dvc", "repro", "prepare"], smoke_repo)
    known = {r.info.run_id for r in _stage_runs(smoke_repo, "train_vae")}
    epochs = {"q-two": 2, "q-three": 3}
    # a learning rate no other test uses: a stage DVC ran before with the same deps and params (the smoke
    # default has 2 epochs, the --temp test 3) is restored from DVC's run cache and opens no MLflow run
    for name, n in epochs.items():
        _run(["dvc", "exp", "run", "--queue", "-n", name, "-S", f"train_vae.train.epochs={n}",
              "-S", "train_vae.train.lr=0.0015", "train_vae"], smoke_repo)
    _start_queue(smoke_repo, 2)
    _wait_for_experiments(smoke_repo, set(epochs))
    new = {r.data.tags.get("capsynth.dvc_experiment"): r for r in _stage_runs(smoke_repo, "train_vae")
           if r.info.run_id not in known}
    assert set(new) == set(epochs), f"runs in the project's store: {sorted(map(str, new))}"
    client = _mlflow(smoke_repo)
    for name, run in new.items():
        assert run.info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_elbo")]
        assert sorted(steps) == list(range(epochs[name])), (name, steps)  # each epoch once
    a, b = new["q-two"].info, new["q-three"].info
    assert a.start_time < b.end_time and b.start_time < a.end_time, "the two experiments did not overlap"


def test_seeds_command_summarises_queued_seed_experiments(smoke_repo):
    """`capsynth seeds`: one experiment per seed through DVC's queue, mean ± std of the stage's metrics, the
    values those experiments logged to MLflow; run again, it queues nothing and gives the same summary."""
    if not (smoke_repo / "data" / "prepared").exists():
        _run(["dvc", "repro", "prepare"], smoke_repo)
    # a setting no other test runs: a stage DVC has run before with the same deps and params is restored from
    # its run cache and opens no MLflow run
    cmd = [str(BIN / "capsynth"), "seeds", "train_vae.train.seed", "--seeds", "0", "1", "2", "--stage", "train_vae",
           "-S", "train_vae.train.epochs=2", "-S", "train_vae.train.lr=0.001", "--name", "vae-e2", "-j", "2",
           "--out", "seeds.json"]
    _run(cmd, smoke_repo)
    summary = json.loads((smoke_repo / "seeds.json").read_text())
    assert set(summary["experiments"]) == {"0", "1", "2"}
    elbo = summary["metrics"]["metrics/train_vae.json:test_elbo"]
    assert elbo["n"] == 3 and elbo["std"] > 0  # different seeds train differently
    logged = {r.data.tags.get("capsynth.dvc_experiment"): r.data.metrics.get("test_elbo")
              for r in _stage_runs(smoke_repo, "train_vae")}
    for seed, name in summary["experiments"].items():
        assert elbo["values"][seed] == pytest.approx(logged[name], rel=1e-6), name
    assert elbo["mean"] == pytest.approx(sum(elbo["values"].values()) / 3)
    again = _run(cmd, smoke_repo)
    assert "Queued experiment" not in again.stdout + again.stderr
    assert json.loads((smoke_repo / "seeds.json").read_text()) == summary


def test_rerun_from_scratch_is_byte_identical(smoke_repo):
    prepared = smoke_repo / "data" / "prepared"
    if not prepared.exists():
        _run(["dvc", "repro"], smoke_repo)
    before = _tree_hash(prepared)
    _run(["dvc", "repro", "--force", "prepare"], smoke_repo)
    assert _tree_hash(prepared) == before


# wall-clock figures: the only content allowed to differ between two runs of the same seed on one machine
WALL_CLOCK = re.compile("(" + "|".join(map(re.escape, WALL_CLOCK_SUFFIXES)) + ")$")


def _outputs(repo: Path) -> dict[str, bytes]:
    """Every file of every stage's outputs in dvc.lock (metrics and plots included), by path."""
    lock = YAML(typ="safe").load(repo / "dvc.lock")
    files: dict[str, bytes] = {}
    for stage in lock["stages"].values():
        for out in stage.get("outs", []):
            root = repo / out["path"]
            for p in sorted(root.rglob("*")) if root.is_dir() else [root]:
                if p.is_file():
                    files[str(p.relative_to(repo))] = p.read_bytes()
    return files


def _without_wall_clock(path: str, data: bytes) -> object:
    """A metrics JSON or curves CSV without its wall-clock keys / columns."""
    if path.endswith(".json"):
        def strip(obj):
            if isinstance(obj, dict):
                return {k: strip(v) for k, v in obj.items() if not WALL_CLOCK.search(k)}
            return [strip(v) for v in obj] if isinstance(obj, list) else obj
        return strip(json.loads(data))
    if path.endswith(".csv"):
        rows = list(csv.reader(io.StringIO(data.decode())))
        keep = [i for i, name in enumerate(rows[0]) if not WALL_CLOCK.search(name)]
        return [[row[i] for i in keep] for row in rows]
    return data


REGISTER_REPORT = "reports/register.json"


def test_every_stage_from_scratch_twice_is_byte_identical(smoke_repo):
    """The whole pipeline run twice from scratch (no Ray checkpoints, no DVC run cache), same seeds: every
    output file of every stage is the same bytes; metrics and curves differ only in wall-clock figures."""
    runs = []
    for _ in range(2):
        shutil.rmtree(smoke_repo / "ray_results", ignore_errors=True)
        _run(["dvc", "repro", "--force", "--no-run-cache"], smoke_repo)
        runs.append(_outputs(smoke_repo))
    first, second = runs
    assert set(first) == set(second)
    stages = YAML(typ="safe").load(smoke_repo / "dvc.lock")["stages"]
    assert {"prepare", "features", "train_captioner", "train_vae", "train_gan", "evaluate", "register"} <= set(stages)
    # the register report describes the registry, which the first run may have changed: the second run finds
    # the very versions the first one registered or found (same weights sha256) and registers nothing new
    registered = [json.loads(run.pop(REGISTER_REPORT)) for run in runs]
    assert set(registered[0]) == set(registered[1])
    for kind, made in registered[0].items():
        found = registered[1][kind]
        assert not found["new_version"], (kind, made, found)
        assert (found["version"], found["weights_sha256"]) == (made["version"], made["weights_sha256"]), kind
    differ = sorted(p for p in first if first[p] != second[p])
    assert all(p.startswith(("metrics/", "plots/")) for p in differ), f"differ beyond metrics/plots: {differ}"
    still = [p for p in differ if _without_wall_clock(p, first[p]) != _without_wall_clock(p, second[p])]
    assert not still, f"differ beyond wall-clock figures: {still}"


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

