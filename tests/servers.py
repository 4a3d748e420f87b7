"""Helpers of the tests that start real servers (`mlflow models serve`, `mlflow server`): readiness, stop.

A free port comes from :func:`components.ray_adapter.free_port`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest


def wait_for_http(url: str, server: subprocess.Popen, log: Path, *, timeout_s: float) -> None:
    """Until ``url`` answers 200; fail the test with the server's log if it exits or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the server exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1)
    pytest.fail(f"no answer from {url} in {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")


def stop_group(server: subprocess.Popen, *, wait_s: float = 20) -> None:
    """Stop a server started with ``start_new_session=True`` and the workers it started (its process group)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            return
        try:
            server.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue
