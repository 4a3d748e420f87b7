"""`mlflow models serve` answers a real HTTP request with a caption, offline, from the registry's champion."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from components import registry, tracking
from tests import fixtures_models

SERVER_START_S = 180  # loading MLflow + torch in a fresh process on a busy 2-core machine


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_ping(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the server exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1)
    pytest.fail(f"no answer from {url}/ping in {SERVER_START_S} s:\n{log.read_text()[-3000:]}")


def _stop(server: subprocess.Popen) -> None:
    """Stop the server and the uvicorn worker it started (its own process group)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            return
        try:
            server.wait(timeout=20)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.mark.slow
def test_served_champion_captions_a_posted_png(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    with tracking._restore_globals(), tracking.stage_run("register", params={}):
        done = registry.register("captioner", fixtures_models.captioner_dir(tmp_path / "captioner"), {"cider": 0.1})
    assert done.alias == registry.CHAMPION

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    # the venv's bin first: `mlflow models serve` execs `uvicorn` from PATH (as with `make`)
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking.tracking_uri(tmp_path),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("PYTHONPATH", None)  # the served model brings its own code (code_paths), nothing from this checkout
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/capsynth-captioner@champion",
             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        _wait_for_ping(url, server, log)
        png = base64.b64encode(fixtures_models.png_bytes(5)).decode("ascii")
        body = {"dataframe_split": {"columns": ["image"], "data": [[png]]}, "params": {"beam_size": 1}}
        request = urllib.request.Request(f"{url}/invocations", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as resp:
            answer = json.loads(resp.read())
    finally:
        _stop(server)
    [prediction] = answer["predictions"]
    words = prediction["caption"].split()
    assert words and set(words) <= set(fixtures_models.WORDS), answer
