"""``ray job submit`` to a real local Ray head (dashboard, Jobs API, token auth): smoke stages run as a job.

The test starts its own head with ``ray start --head --block`` in a session of
its own, on 127.0.0.1, with a token of its own, and stops exactly that head by
killing its process group (``ray stop`` would stop every Ray on the machine).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from components.ray_adapter import free_port
from pipelines.config import write_profile_params

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))
# code only: outputs go to absolute paths outside the uploaded working dir
EXCLUDES = [".git", ".venv", "*.egg-info", "data", "models", "metrics", "plots", "reports", "ray_results", "mlruns", "mlartifacts",
            "*.db", ".dvc/cache", ".dvc/tmp", "__pycache__", ".pytest_cache"]


def wait_for_dashboard(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ray start exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/api/version", timeout=2):
                return
        except OSError as err:  # 401 (token auth on) means it is up
            if getattr(err, "code", None) == 401:
                return
        time.sleep(1)
    raise TimeoutError(f"no Ray dashboard at {url} after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def ray_head():
    """A Ray head on 127.0.0.1 (2 CPUs, dashboard + Jobs API, token auth); yields (address, env)."""
    temp = Path(tempfile.mkdtemp(prefix="rayhead-", dir="/tmp"))  # short: Ray's socket paths have a limit
    dash_port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "CAPSYNTH_TEST_RAY_TEMP": str(temp),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    log = temp / "ray-start.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={free_port()}",
             "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash_port}",
             "--num-cpus=2", f"--temp-dir={temp}", "--disable-usage-stats",
             # ports of our own: the defaults (e.g. the agent's 52365) may be held by another Ray
             # on this machine (the suite's shared instance), and then no agent takes jobs
             *(f"--{name}={free_port()}" for name in (
                 "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
                 "runtime-env-agent-port", "node-manager-port", "object-manager-port",
                 "ray-client-server-port"))],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dash_port}"
    try:
        wait_for_dashboard(address, proc, log)
        yield address, env
    finally:
        stop_head(proc)
        shutil.rmtree(temp, ignore_errors=True)


def stop_head(proc: subprocess.Popen) -> None:
    """SIGTERM the head's process group (ray start and everything it spawned), SIGKILL what is left."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        time.sleep(2)  # let the group's other members exit


def _agent_log_tail(env: dict[str, str]) -> str:
    """The end of the head's dashboard agent log (why no agent took the job), for the failure message."""
    logs = sorted(Path(env["CAPSYNTH_TEST_RAY_TEMP"]).glob("session_*/logs/dashboard_agent*.log"))
    return "".join(f"\n--- {log}\n{log.read_text(errors='replace')[-3000:]}" for log in logs)


def ray_job(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([RAY, "job", *args], env=env, capture_output=True, text=True, timeout=timeout)


def submit(address: str, runtime_env: dict, entrypoint: str, env: dict[str, str]) -> tuple[str, str]:
    """``ray job submit`` (waits for the end, tailing the logs); returns (job id, output).

    Right after start the head's dashboard may answer before its node agent
    takes jobs ("No available agent"): then it tries again, for up to three
    minutes (the agent starts slowly on a loaded 2-core machine).
    """
    deadline = time.monotonic() + 180
    while True:
        job_id = f"capsynth-test-{secrets.token_hex(4)}"
        done = ray_job(["submit", "--address", address, "--submission-id", job_id,
                        "--runtime-env-json", json.dumps(runtime_env), "--", "bash", "-c", entrypoint], env, 600)
        output = done.stdout + done.stderr
        if done.returncode == 0 or "No available agent" not in output or time.monotonic() > deadline:
            assert done.returncode == 0, output[-6000:] + _agent_log_tail(env)
            return job_id, output
        time.sleep(3)


def test_submitted_smoke_stages_succeed_and_log_to_mlflow(ray_head, tmp_path):
    import mlflow

    address, env = ray_head
    params = tmp_path / "params.yaml"
    write_profile_params(REPO / "params.yaml", "smoke", params)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runtime_env = {"working_dir": str(REPO), "excludes": EXCLUDES,
                   "env_vars": {"MLFLOW_TRACKING_URI": uri, "CAPSYNTH_PIPELINE_RUN": "job-test"}}
    out = {name: tmp_path / name for name in ("data", "models", "reports", "metrics", "plots", "ray_results")}
    entrypoint = (
        f"python -m pipelines.prepare --params {params} --out {out['data']}/prepared"
        f" --report {out['reports']}/prepare.json"
        f" && python -m pipelines.train --family vae --params {params} --prepared {out['data']}/prepared"
        f" --model {out['models']}/vae --reports {out['reports']}/vae --metrics {out['metrics']}/train_vae.json"
        f" --plots {out['plots']}/vae.csv --storage {out['ray_results']}")
    job_id, _ = submit(address, runtime_env, entrypoint, env)
    status = ray_job(["status", "--address", address, job_id], env, 60)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", status.stdout + status.stderr)  # no colours
    assert f"Job '{job_id}' succeeded" in plain, plain  # how `ray job status` says SUCCEEDED

    # the outputs are where the job was told to write them
    assert (out["data"] / "prepared" / "images.parquet").is_file()
    metrics = json.loads((out["metrics"] / "train_vae.json").read_text())
    assert metrics["epochs_run"] == 2 and (out["models"] / "vae").is_dir()
    assert list((out["ray_results"]).glob("vae-*/epoch-0001"))

    # ... and so is the stage's MLflow run, with a value per epoch
    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("capsynth").experiment_id],
                                filter_string="tags.`capsynth.stage` = 'train_vae'")
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_elbo")] == [0, 1]

    # without the cluster's token the Jobs API refuses
    stranger = {**env, "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    refused = ray_job(["list", "--address", address], stranger, 60)
    assert refused.returncode != 0
