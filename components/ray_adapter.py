"""Ray adapter: the one place that decides where Ray runs.

* ``RAY_ADDRESS`` set (``ray://head:10001``, ``head:6379`` or ``auto``): connect
  to that cluster; it brings its own resources (``num_cpus`` is ignored) and,
  under ``ray job submit --working-dir .``, its own copy of the code.
* Otherwise: start a private local instance (never attach to another one
  running on the machine), without the dashboard, with the project folder on
  the workers' ``PYTHONPATH`` so they import ``components`` whatever the
  driver's working directory is.

Every stage calls :func:`init_ray` before using Ray; it does nothing when Ray
is already initialized (a test session, a notebook), so stages compose.
Worker output is forwarded to the driver's terminal.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import ray

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def init_ray(*, num_cpus: int | None = None) -> None:
    """Connect to ``RAY_ADDRESS`` if set, else start local Ray; idempotent.

    Args:
        num_cpus: CPUs of a local instance (default: all of the machine's).
            Ignored when connecting to a cluster.
    """
    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        log.info("connecting to the Ray cluster at %s", address)
        ray.init(address=address, log_to_driver=True)
        return
    pythonpath = os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=False,
        log_to_driver=True,
        runtime_env={"env_vars": {"PYTHONPATH": pythonpath}},
    )


def cluster_resources() -> dict[str, float]:
    """Total CPUs, GPUs (and other resources) of the connected cluster."""
    return dict(ray.cluster_resources())


__all__ = ["init_ray", "cluster_resources"]
