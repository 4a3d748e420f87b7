"""Ray adapter: the one place that decides where Ray runs.

* ``RAY_ADDRESS`` set (``ray://head:10001``, ``head:6379`` or ``auto``): connect
  to that cluster; it brings its own resources (``num_cpus`` is ignored) and,
  under ``ray job submit --working-dir .``, its own copy of the code.
* Otherwise: start a private local instance (never attach to another one
  running on the machine), with its dashboard on 127.0.0.1 only (it serves
  the State API Ray Train relies on), with the project folder on
  the workers' ``PYTHONPATH`` so they import ``components`` whatever the
  driver's working directory is.

Every stage calls :func:`init_ray` before using Ray; it does nothing when Ray
is already initialized (a test session, a notebook), so stages compose.
Worker output is forwarded to the driver's terminal.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path

import ray

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
START_ATTEMPTS = 3  # a local instance that fails to start (a port race) is started again
# Ray's own advisories that repeat, with a traceback each, while the machine is busy and are "safe to
# ignore" in Ray's words: kept below ERROR out of every Ray process's logging (quiet_ray_logs). Ray Train's
# controller logs "Failed to send resource request ..." when its autoscaling coordinator is slow to
# answer (5 s) on 2 loaded cores: a fixed-size local run has nothing to scale.
QUIETED_LOGGERS = ("ray.train.v2._internal.execution.scaling_policy.autoscaling_coordinator_client",)


class _BelowError(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


def quiet_ray_logs() -> None:
    """Drop the records below ERROR of :data:`QUIETED_LOGGERS` in this process (idempotent).

    The local instance's ``worker_process_setup_hook``: it runs in every Ray worker process, the
    Train controller's included, before any code of theirs. A filter, not a level: Ray Train
    configures its loggers with ``logging.config.dictConfig``, which resets the level of every
    logger under ``ray.train`` but keeps their filters.
    """
    for name in QUIETED_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _BelowError) for f in logger.filters):
            logger.addFilter(_BelowError())


def init_ray(*, num_cpus: int | None = None, dashboard: bool = True) -> None:
    """Connect to ``RAY_ADDRESS`` if set, else start local Ray; idempotent.

    Args:
        num_cpus: CPUs of a local instance (default: all of the machine's).
            Ignored when connecting to a cluster.
        dashboard: Start the local instance with its dashboard (on 127.0.0.1),
            which serves Ray's State API. On by default: Ray Train's
            placement-group cleaner asks the State API once a second whether
            the Train controller is alive. Without it, every training stage
            printed "Failed to query Ray Train Controller actor state" once a
            second, and a controller that dies (a trial that ASHA stops, a
            killed driver) leaves its workers' CPUs reserved, so the next
            trial waits for them forever. Starting it cost no measurable time
            here (4.6 s against 5.2 s for the instance without it).
    """
    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        log.info("connecting to the Ray cluster at %s", address)
        ray.init(address=address, log_to_driver=True)
        return
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    for attempt in range(1, START_ATTEMPTS + 1):
        port = None
        if dashboard:
            # Workers find the State API by this URL, not by guessing among the Ray instances
            # running on the machine (which fails when there are several).
            port = free_port()
            env["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
        try:
            ray.init(
                address="local",
                num_cpus=num_cpus,
                include_dashboard=dashboard,
                dashboard_host="127.0.0.1",
                dashboard_port=port,
                log_to_driver=True,
                runtime_env={"env_vars": env,
                             "worker_process_setup_hook": f"{quiet_ray_logs.__module__}.quiet_ray_logs"},
            )
            return
        except Exception as err:  # noqa: BLE001 - retried, then raised as it is
            # Two instances starting at once (two queued experiments) can race for a port: the
            # one free_port() found, or one Ray picks for itself, is taken before it is bound.
            ray.shutdown()
            if attempt == START_ATTEMPTS:
                raise
            log.warning("starting local Ray failed (%s); again with other ports (%d of %d)",
                        str(err).splitlines()[0] if str(err) else type(err).__name__, attempt + 1, START_ATTEMPTS)
            time.sleep(attempt)


def train_log_dir() -> Path | None:
    """Ray Train's log files of this Ray session (``<temp>/<session>/logs/train``), if on this machine.

    They hold every level of Ray Train's own logging (JSON lines), including
    what the console leaves out (``components.train.ray_trainer.make_trainer``).
    """
    if not ray.is_initialized():
        return None
    ctx = ray.get_runtime_context()
    folder = Path(ctx.get_temp_dir()) / ctx.get_session_name() / "logs" / "train"
    return folder if folder.is_dir() else None


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a dashboard or a head started next)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_resources() -> dict[str, float]:
    """Total CPUs, GPUs (and other resources) of the connected cluster."""
    return dict(ray.cluster_resources())


__all__ = ["QUIETED_LOGGERS", "cluster_resources", "free_port", "init_ray", "quiet_ray_logs"]
