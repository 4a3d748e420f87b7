"""The smoke profile's prepared synthetic dataset, shared by the integration test modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines import prepare
from pipelines.config import Params, load_params

REPO = Path(__file__).resolve().parents[2]


def prepare_smoke(tmp_path_factory: pytest.TempPathFactory, name: str) -> tuple[Path, Params]:
    """Prepare the smoke dataset in a new folder ``name``; return it (the tests' cwd) and the smoke params."""
    work = tmp_path_factory.mktemp(name)
    params = load_params(REPO / "params.yaml", profile="smoke")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)  # prepare stores image paths relative to the cwd
        prepare.run(params.prepare, Path("data/prepared"), Path("reports/prepare.json"), progress=False)
    return work, params
