"""The tracking server of ``infra/``, for real: PostgreSQL + ``mlflow server`` on 127.0.0.1, the smoke pipeline
and two experiments at once logging into it through ``MLFLOW_TRACKING_URI``.

PostgreSQL's server programs come from Debian's ``postgresql`` package (``make test`` installs it when
``initdb`` is absent: ``make postgres``). The cluster lives in a fresh folder, owned by an unprivileged user
when the tests run as root (PostgreSQL refuses root), listens on 127.0.0.1 only, on a free port, with trust
authentication and its socket in that folder; ``mlflow server`` keeps its artifacts in a local folder. Both
are stopped, and the folder removed, when the module ends, whatever happened.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from components import tracking
from components.ray_adapter import free_port
from tests.e2e.test_pipeline import _run, _start_queue, _wait_for_experiments, smoke_repo  # noqa: F401 (smoke_repo: a fixture)
from tests.servers import stop_group, wait_for_http

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SERVER_START_S = 240  # `mlflow server` creates its tables in PostgreSQL on the first start, on 2 busy cores
STAGES = ("prepare", "features", "train_captioner", "finetune_captioner", "train_vae", "train_gan", "train_imagine",
          "evaluate", "register")
FAMILIES = ("captioner", "vae", "gan", "imagine")
DB = "mlflow"


def _postgres_bin() -> Path:
    """The folder of PostgreSQL's server programs (Debian keeps them out of PATH: /usr/lib/postgresql/N/bin)."""
    found = shutil.which("initdb") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                                                       reverse=True)), None)
    if not found:
        pytest.fail("PostgreSQL's initdb is not installed: `make postgres` installs Debian's postgresql package "
                    "(`make test` does it first)")
    return Path(os.path.realpath(found)).parent


def _as_postgres_user(cmd: list[str]) -> list[str]:
    """``cmd`` as an unprivileged user when this process is root (PostgreSQL refuses to run as root)."""
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", _postgres_user(), "--", *cmd]


def _postgres_user() -> str:
    """Debian's ``postgres`` account (the package creates it), else ``nobody``."""
    with contextlib.suppress(KeyError):
        return pwd.getpwnam("postgres").pw_name
    return "nobody"


@dataclasses.dataclass(frozen=True)
class Postgres:
    port: int
    folder: Path

    @property
    def uri(self) -> str:
        return f"postgresql://{DB}@127.0.0.1:{self.port}/{DB}"


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL cluster on 127.0.0.1:<free port> with a database ``mlflow`` owned by the role ``mlflow``."""
    bin_dir = _postgres_bin()
    # not under pytest's tmp folder: that one is private to this user, and the cluster's owner may be another
    folder = Path(tempfile.mkdtemp(prefix="capsynth-pg-"))
    data, sock, log = folder / "data", folder / "sock", folder / "postgres.log"
    port = free_port()
    ctl = [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log)]
    sock.mkdir()
    if os.geteuid() == 0:
        account = pwd.getpwnam(_postgres_user())
        for path in (folder, sock):
            os.chown(path, account.pw_uid, account.pw_gid)

    def run(cmd: list[str], timeout: float = 120) -> None:
        proc = subprocess.run(_as_postgres_user(cmd), cwd=folder, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            server_log = log.read_text()[-3000:] if log.exists() else ""
            raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n"
                                 f"{server_log}")

    try:
        run([str(bin_dir / "initdb"), "-D", str(data), "-U", DB, "--auth=trust", "-E", "UTF8", "--no-sync"])
        # 127.0.0.1 only; fsync off: a throwaway cluster (every other setting is PostgreSQL's default)
        run([*ctl, "-w", "-t", "120", "-o",
             f"-c listen_addresses=127.0.0.1 -p {port} -k {sock} -c fsync=off", "start"], timeout=180)
        run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", DB, DB])
        yield Postgres(port, folder)
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(_as_postgres_user([*ctl, "-m", "fast", "-w", "stop"]), cwd=folder,
                           capture_output=True, timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


@dataclasses.dataclass(frozen=True)
class Server:
    uri: str
    artifacts: Path
    postgres: Postgres


@pytest.fixture(scope="module")
def server(postgres, tmp_path_factory) -> Iterator[Server]:
    """``mlflow server`` on 127.0.0.1:<free port>: runs and registry in PostgreSQL, artifacts in a local folder
    (served by the server: clients upload through it)."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    artifacts, log = folder / "artifacts", folder / "server.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", postgres.uri,
             "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port),
             "--workers", "2", "--allowed-hosts", f"127.0.0.1:{port},localhost:{port}"],
            cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        wait_for_http(f"{url}/health", proc, log, timeout_s=SERVER_START_S)
        yield Server(url, artifacts, postgres)
    finally:
        stop_group(proc, wait_s=30)


def _run_on(server: Server, cmd: list[str], repo: Path, **kw) -> subprocess.CompletedProcess:
    """A command in the smoke repo with ``MLFLOW_TRACKING_URI`` pointing at the server (DVC's queue workers
    started by it inherit it)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", server.uri)
        return _run(cmd, repo, **kw)


def _client(server: Server):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=server.uri, registry_uri=server.uri)


def _stage_runs(server: Server, stage: str) -> list:
    client = _client(server)
    experiment = client.get_experiment_by_name("capsynth").experiment_id
    return client.search_runs([experiment], filter_string=f"tags.`capsynth.stage` = '{stage}'")


def _assert_no_local_store(repo: Path) -> None:
    """Nothing went to the SQLite default beside the repo."""
    assert not (repo / "mlflow.db").exists() and not (repo / "mlartifacts").exists(), sorted(os.listdir(repo))


def _rows(postgres: Postgres, sql: str) -> list[tuple]:
    """Rows straight from PostgreSQL, not through MLflow."""
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=postgres.port, user=DB, dbname=DB) as conn:
        return conn.execute(sql).fetchall()


def test_smoke_pipeline_logs_runs_models_and_artifacts_into_the_server(server, smoke_repo, tmp_path,
                                                                         monkeypatch):
    out = _run_on(server, ["dvc", "repro"], smoke_repo)
    assert "capsynth register: done in" in out.stdout + out.stderr
    _assert_no_local_store(smoke_repo)
    client = _client(server)
    experiment = client.get_experiment_by_name("capsynth")
    assert experiment.artifact_location.startswith("mlflow-artifacts:"), experiment.artifact_location
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    [parent] = [r for r in runs if r.data.tags["capsynth.stage"] == "pipeline"]
    children = {r.data.tags["capsynth.stage"]: r for r in runs
                if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert set(STAGES) <= set(children), sorted(children)
    for stage in STAGES:
        assert children[stage].info.status == "FINISHED", stage
    # the runs are PostgreSQL's rows
    in_postgres = {row[0] for row in _rows(server.postgres, "select run_uuid from runs where status = 'FINISHED'")}
    assert {children[s].info.run_id for s in STAGES} <= in_postgres
    # per-epoch metrics through the server, each epoch once
    steps = [m.step for m in client.get_metric_history(children["train_vae"].info.run_id, "train_elbo")]
    assert sorted(steps) == list(range(len(steps))) and steps

    # registered models and their aliases, in the server's registry (PostgreSQL's table too)
    report = json.loads((smoke_repo / "reports" / "register.json").read_text())
    for family in FAMILIES:
        version = client.get_model_version(f"capsynth-{family}", report[family]["version"])
        assert version.aliases and set(version.aliases) <= {"champion", "challenger"}, family
    assert client.get_model_version_by_alias("capsynth-captioner", "champion").version is not None
    registered = {row[0] for row in _rows(server.postgres, "select name from registered_models")}
    assert {f"capsynth-{f}" for f in FAMILIES} <= registered

    # the artifacts went through the server into its local artifact root
    for stage, artifact in (("prepare", "report/prepare.json"), ("register", "report/register.json")):
        run = children[stage]
        assert artifact in {a.path for a in client.list_artifacts(run.info.run_id, artifact.split("/")[0])}
        on_disk = server.artifacts / experiment.experiment_id / run.info.run_id / "artifacts" / artifact
        assert on_disk.is_file(), (stage, sorted(str(p) for p in server.artifacts.rglob("*"))[:50])
    # each registered version, downloaded through the server's registry by the project's own call (the one
    # the caption and sample commands make: pipelines/common.py), is a model folder of the local root
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)  # models:/ URIs find the registry from it
    local = {p.read_bytes(): p for p in server.artifacts.rglob("MLmodel")}
    for family in FAMILIES:
        got = tracking.download_artifacts(f"models:/capsynth-{family}/{report[family]['version']}", tmp_path / family)
        assert (got / "MLmodel").read_bytes() in local, (family, sorted(map(str, local.values())))
    got = tracking.download_artifacts("models:/capsynth-captioner@champion", tmp_path / "champion")
    assert (got / "MLmodel").read_bytes() in local


def test_two_queued_experiments_run_at_once_into_the_server(server, smoke_repo):
    """`dvc exp run --queue` twice, `dvc queue start -j 2`: both DVC workers log into PostgreSQL at the same
    time (the case SQLite's single writer makes wait), each run FINISHED with its name and one history."""
    if not (smoke_repo / "data" / "prepared").exists():
        _run_on(server, ["dvc", "repro", "prepare"], smoke_repo)
    known = {r.info.run_id for r in _stage_runs(server, "train_vae")}
    epochs = {"pg-two": 2, "pg-three": 3}
    # a learning rate the smoke profile does not use: a stage DVC ran before with the same deps and params is
    # restored from DVC's run cache and opens no MLflow run
    for name, n in epochs.items():
        _run_on(server, ["dvc", "exp", "run", "--queue", "-n", name, "-S", f"train_vae.train.epochs={n}",
                         "-S", "train_vae.train.lr=0.0015", "train_vae"], smoke_repo)
    with pytest.MonkeyPatch.context() as mp:  # the queue's workers inherit the server's URI
        mp.setenv("MLFLOW_TRACKING_URI", server.uri)
        _start_queue(smoke_repo, 2)
    _wait_for_experiments(smoke_repo, set(epochs))
    new = {r.data.tags.get("capsynth.dvc_experiment"): r for r in _stage_runs(server, "train_vae")
           if r.info.run_id not in known}
    assert set(new) == set(epochs), f"runs in the server's store: {sorted(map(str, new))}"
    client = _client(server)
    for name, run in new.items():
        assert run.info.status == "FINISHED", name
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_elbo")]
        assert sorted(steps) == list(range(epochs[name])), (name, steps)  # each epoch once
    a, b = new["pg-two"].info, new["pg-three"].info
    assert a.start_time < b.end_time and b.start_time < a.end_time, "the two experiments did not overlap"
    in_postgres = dict(_rows(server.postgres, "select run_uuid, status from runs"))
    assert all(in_postgres[r.info.run_id] == "FINISHED" for r in new.values())
    _assert_no_local_store(smoke_repo)
