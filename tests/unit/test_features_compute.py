"""Decoding and the model step (no Ray): what the actors and the benchmark baseline run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from components.data.folders import PreparedDir
from components.data.images import BadImageError
from components.features.decode import decode_batch, load_resized
from components.features.extract import Featurizer, ModelOptions, read_image_table
from components.features.weights import load_backbone
from tests.fixtures_formats import write_corrupt_image, write_image


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One intra-op thread: on a small shared CI machine, more threads mostly wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_load_resized_any_mode_and_format(tmp_path):
    for name, mode, size in [("a.png", "RGBA", (10, 7)), ("b.jpg", "L", (200, 150)), ("c.png", "RGB", (32, 32))]:
        write_image(tmp_path / name, size=size, mode=mode)
        pixels = load_resized(tmp_path / name, 32)
        assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8 and pixels.flags.writeable
    # an RGB image of the right size is returned as is
    np.testing.assert_array_equal(load_resized(tmp_path / "c.png", 32), np.asarray(Image.open(tmp_path / "c.png")))


def test_load_resized_bad_images(tmp_path):
    with pytest.raises(BadImageError, match="missing image"):
        load_resized(tmp_path / "nope.png", 32)
    write_corrupt_image(tmp_path / "bad.jpg")
    with pytest.raises(BadImageError, match="bad.jpg: corrupt image"):
        load_resized(tmp_path / "bad.jpg", 32)


def test_decode_batch(tmp_path):
    paths = [str(write_image(tmp_path / f"{i}.png", size=(9, 9), seed=i)) for i in range(3)]
    out = decode_batch({"image_id": np.array([7, 8, 9]), "path": np.array(paths, dtype=object)}, input_size=16)
    assert out["image"].shape == (3, 16, 16, 3) and out["image"].dtype == np.uint8
    np.testing.assert_array_equal(out["image_id"], [7, 8, 9])


def test_read_image_table_resolves_relative_paths(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"image_id": [1, 2], "path": ["images/a.png", "/abs/b.png"],
                             "split": ["train", "val"]}), PreparedDir(tmp_path).images)
    table = read_image_table(PreparedDir(tmp_path).images, root=tmp_path)
    assert table.column_names == ["image_id", "path"]
    assert table.column("path").to_pylist() == [str(tmp_path / "images/a.png"), "/abs/b.png"]


@pytest.fixture(scope="module")
def resnet18():
    backbone, _ = load_backbone("resnet18", weights="random", seed=0, grid_size=2)
    return backbone


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_featurizer_shapes_dtypes_and_values(resnet18, dtype):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 64, 64, 3), dtype=np.uint8)  # (B, S, S, 3)
    options = ModelOptions(backbone="resnet18", grid_size=2, dtype=dtype, threads=1, precision="fp32")
    featurize = Featurizer(resnet18.state_dict(), options)  # rebuilt from the state, as in an actor
    table = featurize({"image_id": np.array([5, 6, 7]), "image": images})
    assert table.column("image_id").to_pylist() == [5, 6, 7]
    grid = table.column("grid").combine_chunks().flatten().to_numpy().reshape(3, 4, 512)  # (B, P, C)
    pooled = table.column("pooled").combine_chunks().flatten().to_numpy().reshape(3, 512)
    assert grid.dtype == np.dtype(dtype) == pooled.dtype

    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    with torch.inference_mode():
        ref_grid, ref_pooled = resnet18.extract(x)  # (B, C, g, g), (B, C)
    ref_grid = ref_grid.flatten(2).transpose(1, 2)  # (B, P, C), raster order
    tol = dict(rtol=1e-2, atol=1e-2) if dtype == "float16" else dict(rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(grid.astype(np.float32), ref_grid.numpy(), **tol)
    np.testing.assert_allclose(pooled.astype(np.float32), ref_pooled.numpy(), **tol)


def test_featurizer_bf16_autocast_stays_close_to_float32(resnet18):
    # precision bf16: the backbone under bf16 autocast; the features stay within bf16's rounding of fp32's
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, size=(4, 64, 64, 3), dtype=np.uint8)
    batch = {"image_id": np.arange(4), "image": images}
    grids = {}
    for precision in ("fp32", "bf16"):
        featurize = Featurizer(None, ModelOptions(backbone="resnet18", grid_size=2, dtype="float32", threads=1,
                                                  precision=precision), backbone=resnet18)
        assert (featurize.autocast is torch.bfloat16) == (precision == "bf16")
        grids[precision] = featurize(batch).column("grid").combine_chunks().flatten().to_numpy()
    rel = np.abs(grids["bf16"] - grids["fp32"]).mean() / np.abs(grids["fp32"]).mean()
    assert 0 < rel < 0.03  # bf16 differs (it ran), by about its 8-bit mantissa's rounding


def test_featurizer_is_batch_independent(resnet18):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(4, 64, 64, 3), dtype=np.uint8)
    featurize = Featurizer(None, ModelOptions(backbone="resnet18", grid_size=2, threads=1), backbone=resnet18)
    whole = featurize({"image_id": np.arange(4), "image": images})
    parts = [featurize({"image_id": np.arange(i, i + 2), "image": images[i:i + 2]}) for i in (0, 2)]
    import pyarrow as pa

    assert pa.concat_tables(parts).combine_chunks().equals(whole.combine_chunks())


def test_progress_lines_print_once_per_tenth_of_the_images(capsys):
    from components.features.extract import _ProgressLines

    lines = _ProgressLines(1000)
    for done in range(64, 1000, 64):
        lines.update(done)
    lines.update(1000)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 10 and out[0].startswith("features: 128/1,000 images (12%)")
    assert out[-1].startswith("features: 1,000/1,000 images (100%)")
