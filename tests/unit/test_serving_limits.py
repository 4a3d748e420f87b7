"""The request limits and image checks shared by the served models and the CLIs: each bad input, one line."""

from __future__ import annotations

import base64
import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from components.config import ConfigError
from components.serving import BadInput, ServingLimits
from pipelines import caption, sample
from tests import fixtures_models

LIMITS = ServingLimits()


def _refused(call, *args) -> str:
    with pytest.raises(BadInput) as err:
        call(*args)
    reason = str(err.value)
    assert "\n" not in reason
    return reason


def test_limits_have_documented_defaults_and_read_the_environment():
    assert LIMITS == ServingLimits(max_rows=64, max_image_bytes=10 * 2**20, max_image_pixels=4096**2,
                                   max_beam_size=10, max_samples=1024)
    assert ServingLimits.from_env({"CAPSYNTH_SERVE_MAX_ROWS": "3", "OTHER": "x"}) == ServingLimits(max_rows=3)
    with pytest.raises(ConfigError, match="CAPSYNTH_SERVE_MAX_BEAM_SIZE='many' is not an integer"):
        ServingLimits.from_env({"CAPSYNTH_SERVE_MAX_BEAM_SIZE": "many"})
    with pytest.raises(ConfigError, match="CAPSYNTH_SERVE_MAX_SAMPLES must be at least 1, got 0"):
        ServingLimits.from_env({"CAPSYNTH_SERVE_MAX_SAMPLES": "0"})


def test_rows_beam_size_and_samples_out_of_range_are_refused():
    LIMITS.check_rows(64)
    assert _refused(LIMITS.check_rows, 65) == "65 rows in one request, more than 64 (CAPSYNTH_SERVE_MAX_ROWS)"
    LIMITS.check_beam_size(10)
    for k in (0, 11):
        assert _refused(LIMITS.check_beam_size, k) == \
            f"beam_size must be in 1..10 (CAPSYNTH_SERVE_MAX_BEAM_SIZE), got {k}"
    LIMITS.check_samples([1000, 24])
    assert _refused(LIMITS.check_n, 1025) == "n must be in 1..1024 (CAPSYNTH_SERVE_MAX_SAMPLES), got 1025"
    assert _refused(LIMITS.check_samples, [2, 0]).startswith("row 1: n must be in 1..1024")
    assert _refused(LIMITS.check_samples, [1000, 25]) == \
        "1025 images in one request, more than 1024 (CAPSYNTH_SERVE_MAX_SAMPLES)"
    assert "65 rows" in _refused(LIMITS.check_samples, [1] * 65)


def test_image_cells_not_base64_not_bytes_or_too_long_are_refused():
    png = fixtures_models.png_bytes()
    assert LIMITS.image_bytes(png) == LIMITS.image_bytes(base64.b64encode(png).decode()) == png
    assert _refused(LIMITS.image_bytes, "not base64!").startswith("not base64 (")
    assert _refused(LIMITS.image_bytes, None) == "an image must be bytes or a base64 string, got NoneType"
    small = ServingLimits(max_image_bytes=len(png) - 1)
    assert _refused(small.image_bytes, png) == \
        f"{len(png)} bytes, more than {len(png) - 1} (CAPSYNTH_SERVE_MAX_IMAGE_BYTES)"
    long_string = "A" * (4 * len(png))  # refused by its length, before decoding
    assert _refused(small.image_bytes, long_string).startswith(f"a base64 string of {len(long_string)} characters")


@pytest.mark.parametrize("case,reason", [
    ("empty", "empty (0 bytes)"),
    ("not an image", "not an image (no format PIL reads)"),
    ("truncated", "a broken image (image file is truncated)"),
    ("decompression bomb", "more than 16777216 pixels (CAPSYNTH_SERVE_MAX_IMAGE_PIXELS): Image size "
                           "(10000000000 pixels) exceeds limit"),
])
def test_bad_images_are_refused_with_one_line(case, reason):
    assert _refused(LIMITS.open_image, fixtures_models.bad_images()[case], 32).startswith(reason)


def test_pixels_are_counted_from_the_header_before_decoding():
    """Below PIL's own bomb limit, the header's width x height alone refuses the image."""
    claims = fixtures_models.png_claiming(5000, 4000)
    assert _refused(LIMITS.open_image, claims, 32) == \
        "5000x4000 = 20000000 pixels, more than 16777216 pixels (CAPSYNTH_SERVE_MAX_IMAGE_PIXELS)"
    LIMITS.set_pil_limit()  # PIL's check in Image.open now uses the same number (the fixture puts it back)
    assert Image.MAX_IMAGE_PIXELS == 4096**2
    twice = fixtures_models.png_claiming(8000, 5000)  # over twice the limit: PIL's DecompressionBombError
    assert "Image size (40000000 pixels) exceeds limit of 33554432 pixels" in _refused(LIMITS.open_image, twice, 32)


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_that_covers_the_model_size():
    pixels = np.random.default_rng(0).integers(0, 256, (1600, 2000, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG")
    assert LIMITS.open_image(buf.getvalue(), 224).size == (500, 400)  # 1/4: 1/8 would be under 224
    rgb = LIMITS.open_image(fixtures_models.png_bytes(size=40), 32)
    assert rgb.size == (40, 40) and rgb.mode == "RGB"


def test_an_image_file_over_the_byte_limit_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(fixtures_models.png_bytes())
    limits = ServingLimits(max_image_bytes=100)
    assert _refused(limits.open_image, path, 32).endswith("more than 100 (CAPSYNTH_SERVE_MAX_IMAGE_BYTES)")


def _error_line(capsys, exit_info) -> str:
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err.strip()


def test_caption_cli_names_a_bad_file_in_one_line_and_exits_2(tmp_path, capsys):
    model = fixtures_models.captioner_dir(tmp_path / "captioner")
    for case, data in fixtures_models.bad_images().items():
        bad = tmp_path / f"{case.replace(' ', '_')}.png"
        bad.write_bytes(data)
        with pytest.raises(SystemExit) as exit_info:
            caption.main([str(bad), "--model", str(model)])
        assert _error_line(capsys, exit_info).startswith(f"capsynth caption: error: {bad}: "), case
    good = tmp_path / "good.png"
    good.write_bytes(fixtures_models.png_bytes())
    with pytest.raises(SystemExit) as exit_info:
        caption.main([str(good), "--model", str(model), "--beam-size", "11"])
    assert _error_line(capsys, exit_info) == \
        "capsynth caption: error: beam_size must be in 1..10 (CAPSYNTH_SERVE_MAX_BEAM_SIZE), got 11"
    caption.main([str(good), "--model", str(model), "--beam-size", "1"])
    assert capsys.readouterr().out.startswith(f"{good}\t")


def test_caption_cli_process_given_an_empty_file_prints_no_traceback(tmp_path, repo_root):
    """The issue's case, as a user meets it: a fresh process, stderr as printed."""
    model = fixtures_models.captioner_dir(tmp_path / "captioner")
    empty = tmp_path / "empty.jpg"
    empty.touch()
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "caption", str(empty), "--model", str(model)],
                          capture_output=True, text=True, timeout=300, cwd=repo_root)
    assert done.returncode == 2
    assert done.stderr == f"capsynth caption: error: {empty}: empty (0 bytes)\n"


@pytest.mark.parametrize("n", [0, 1025])
def test_sample_cli_refuses_n_out_of_range_in_one_line(tmp_path, capsys, n):
    with pytest.raises(SystemExit) as exit_info:
        sample.main(["--model", str(fixtures_models.vae_dir(tmp_path / "vae")), "-n", str(n), str(tmp_path / "x.png")])
    assert _error_line(capsys, exit_info) == \
        f"capsynth sample: error: n must be in 1..1024 (CAPSYNTH_SERVE_MAX_SAMPLES), got {n}"
    assert not (tmp_path / "x.png").exists()
