"""Multi-node DDP: two Ray nodes on this machine (``ray.cluster_utils.Cluster``), one worker on each.

Each family runs in a process of its own (``multinode_run.py``), because a
``Cluster`` needs a Ray of its own and this session shares one (``ray_session``).
The hook in ``ddp_checks`` fails the run if the ranks' weights ever differ after
a checked step; here we check that the run finished, on 2 nodes, and learned.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCRIPT = Path(__file__).with_name("multinode_run.py")


def run_on_two_nodes(family: str, work: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, str(SCRIPT), family, str(work)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("family, loss", [("captioner", "train_loss"), ("gan", "d_loss")])
def test_two_workers_on_two_nodes_stay_in_sync_and_learn(family, loss, tmp_path):
    result = run_on_two_nodes(family, tmp_path)
    assert result["nodes"] == 2
    history = result["history"]
    assert [row["epoch"] for row in history] == [0, 1, 2]
    assert history[-1][loss] < history[0][loss]
