"""One local Ray instance for the whole integration test session (starting one takes seconds)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def ray_session():
    """Local Ray with 2 CPUs, via the project's adapter; shut down after the session.

    ``RAY_ADDRESS`` is ignored here: integration tests never use a real cluster.
    """
    import ray

    from components.ray_adapter import init_ray

    address = os.environ.pop("RAY_ADDRESS", None)
    try:
        init_ray(num_cpus=2)
        yield ray
    finally:
        ray.shutdown()
        if address is not None:
            os.environ["RAY_ADDRESS"] = address
