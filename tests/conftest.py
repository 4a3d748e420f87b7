"""Shared fixtures. Tests never download anything and write only under tmp_path."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# the prepare stage's PTB token cache: a fresh folder per test session, not ~/.cache
os.environ.setdefault("CAPSYNTH_PTB_CACHE", tempfile.mkdtemp(prefix="capsynth-ptb-test-"))


@pytest.fixture
def repo_root() -> Path:
    return REPO


@pytest.fixture(autouse=True)
def _pil_pixel_limit() -> Iterator[None]:
    """Loading a served captioner sets PIL's pixel limit process-wide (``components.serving``): put it back."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    yield
    Image.MAX_IMAGE_PIXELS = limit
