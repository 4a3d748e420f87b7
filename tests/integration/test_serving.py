"""`mlflow models serve` answers real HTTP requests, offline, from the registry's champions: a caption, images;
a bad request gets 400 with its reason, and the server goes on serving."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from components import registry, tracking
from components.ray_adapter import free_port
from tests import fixtures_models
from tests.servers import stop_group, wait_for_http

SERVER_START_S = 180  # loading MLflow + torch in a fresh process on a busy 2-core machine


@contextlib.contextmanager
def _served(model_uri: str, tmp_path: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """``mlflow models serve`` of ``model_uri`` from the store in ``tmp_path`` (``env`` added); yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # the venv's bin first: `mlflow models serve` execs `uvicorn` from PATH (as with `make`)
    env = {**os.environ, **(env or {}), "MLFLOW_TRACKING_URI": tracking.tracking_uri(tmp_path),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("PYTHONPATH", None)  # the served model brings its own code (code_paths), nothing from this checkout
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri,
             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        wait_for_http(f"{url}/ping", server, log, timeout_s=SERVER_START_S)
        yield url
    finally:
        stop_group(server, wait_s=20)


def _post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(f"{url}/invocations", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _reason(answer: dict) -> str:
    """The last line of an error's message: MLflow's server puts ``Failed to predict data '<the table>'.``
    (several lines) before the model's one-line reason."""
    return answer["message"].splitlines()[-1]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _images(*cells: str, column: str = "image") -> dict:
    return {"dataframe_split": {"columns": [column], "data": [[cell] for cell in cells]}}


@pytest.mark.slow
def test_served_champion_captions_a_posted_png(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    with tracking._restore_globals(), tracking.stage_run("register", params={}):
        done = registry.register("captioner", fixtures_models.captioner_dir(tmp_path / "captioner"), {"cider": 0.1})
    assert done.alias == registry.CHAMPION

    with _served("models:/capsynth-captioner@champion", tmp_path) as url:
        png = base64.b64encode(fixtures_models.png_bytes(5)).decode("ascii")
        status, answer = _post(url, {"dataframe_split": {"columns": ["image"], "data": [[png]]},
                                     "params": {"beam_size": 1}})
    assert status == 200
    [prediction] = answer["predictions"]
    words = prediction["caption"].split()
    assert words and set(words) <= set(fixtures_models.WORDS), answer


@pytest.mark.slow
def test_served_imagine_model_draws_a_posted_caption_and_refuses_unknown_words(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    with tracking._restore_globals(), tracking.stage_run("register", params={}):
        done = registry.register("imagine", fixtures_models.imagine_dir(tmp_path / "imagine"), {"object_f1": 0.5})
    assert done.alias == registry.CHAMPION

    with _served("models:/capsynth-imagine@champion", tmp_path) as url:
        columns = ["caption", "n", "seed"]
        status, answer = _post(url, {"dataframe_split": {"columns": columns, "data": [["a red circle", 2, 0]]}})
        bad_status, bad = _post(url, {"dataframe_split": {"columns": columns, "data": [["a purple circle", 1, 0]]}})
        rows_status, rows = _post(url, {"dataframe_split": {"columns": columns, "data": [["a red circle", 1, 0]] * 65}})
    assert status == 200 and len(answer["predictions"]) == 2, answer
    with Image.open(io.BytesIO(base64.b64decode(answer["predictions"][0]["image"]))) as image:
        assert image.size == (32, 32)
    assert bad_status == 400 and "outside the vocabulary: purple" in bad["message"], bad
    assert rows_status == 400 and _reason(rows) == \
        "Error: 65 rows in one request, more than 64 (CAPSYNTH_SERVE_MAX_ROWS)", rows


@pytest.mark.slow
def test_served_captioner_answers_each_bad_request_400_with_its_reason_and_keeps_serving(tmp_path, monkeypatch):
    """One server, each bad case once, then a good request; two limits set through the server's environment."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    with tracking._restore_globals(), tracking.stage_run("register", params={}):
        registry.register("captioner", fixtures_models.captioner_dir(tmp_path / "captioner"), {"cider": 0.1})
    png = _b64(fixtures_models.png_bytes(5))
    bad_images = fixtures_models.bad_images()
    cases = {  # body, what the last line of the message says
        "not base64": (_images("not base64!"), "Invalid base64-encoded string"),  # MLflow's own decoding
        "not an image": (_images(_b64(bad_images["not an image"])),
                         "column 'image', row 0: not an image (no format PIL reads)"),
        "empty": (_images(""), "column 'image', row 0: empty (0 bytes)"),
        "truncated": (_images(png, _b64(bad_images["truncated"])),
                      "column 'image', row 1: a broken image (image file is truncated)"),
        "decompression bomb": (_images(_b64(bad_images["decompression bomb"])),
                               "column 'image', row 0: more than 16777216 pixels (CAPSYNTH_SERVE_MAX_IMAGE_PIXELS)"),
        "over the byte limit": (_images(_b64(bytes(10_001))),
                                "column 'image', row 0: 10001 bytes, more than 10000 (CAPSYNTH_SERVE_MAX_IMAGE_BYTES)"),
        "too many rows": (_images(png, png, png), "3 rows in one request, more than 2 (CAPSYNTH_SERVE_MAX_ROWS)"),
        "beam_size out of range": ({**_images(png), "params": {"beam_size": 11}},
                                   "beam_size must be in 1..10 (CAPSYNTH_SERVE_MAX_BEAM_SIZE), got 11"),
        "a missing column": (_images(png, column="picture"), "Model is missing inputs ['image']"),  # MLflow's schema
    }
    limits = {"CAPSYNTH_SERVE_MAX_ROWS": "2", "CAPSYNTH_SERVE_MAX_IMAGE_BYTES": "10000"}
    with _served("models:/capsynth-captioner@champion", tmp_path, env=limits) as url:
        answers = {case: _post(url, body) for case, (body, _) in cases.items()}
        status, good = _post(url, {**_images(png, png), "params": {"beam_size": 2}})
    for case, (_, reason) in cases.items():
        bad_status, answer = answers[case]
        assert bad_status == 400 and reason in _reason(answer), (case, answer)
    assert status == 200 and len(good["predictions"]) == 2, good
