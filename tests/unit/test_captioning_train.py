"""Dataset, train step and evaluation: learning on tiny data, no Ray."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from components.captioning.decoding import beam_search, greedy_decode
from components.captioning.losses import LossConfig
from components.captioning.models import CaptionerConfig, build_model
from components.captioning.train import (
    CaptionBatch,
    CaptionDataset,
    collate_captions,
    evaluate_loss,
    shift_grids,
    train_step,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one intra-op thread is faster and immune to OpenMP oversubscription."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


P, C, V = 4, 8, 12

# 4 images, one caption each, of different lengths: <start> words <end> <pad>..
CAPTIONS = np.array([
    [1, 4, 5, 6, 2, 0, 0],
    [1, 7, 8, 2, 0, 0, 0],
    [1, 9, 4, 10, 11, 2, 0],
    [1, 5, 5, 2, 0, 0, 0],
])


def features(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    grid = rng.normal(size=(n, P, C)).astype(np.float32)
    return grid, grid.mean(1)


def make_model(arch: str, cell: str, *, dropout: float = 0.0, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(CaptionerConfig(
        architecture=arch, cell=cell, vocab_size=V, feature_dim=C, num_positions=P, embed_dim=16,
        hidden_dim=32, num_layers=1, dropout=dropout, attention_dim=16, grid_layers=0, position_embedding=False,
    ))


def test_dataset_reads_float16_memmap_as_float32_batches(tmp_path):
    grid, pooled = features(3)
    mm = np.memmap(tmp_path / "grid.f16", dtype=np.float16, mode="w+", shape=grid.shape)
    mm[:] = grid
    mm.flush()
    mm = np.memmap(tmp_path / "grid.f16", dtype=np.float16, mode="r", shape=grid.shape)
    index = np.array([2, 0, 2, 1])  # captions -> feature rows
    ds = CaptionDataset(mm, pooled.astype(np.float16), index, CAPTIONS)
    assert len(ds) == 4
    item = ds[0]
    assert isinstance(item, CaptionBatch) and item.grid.dtype == torch.float32
    np.testing.assert_allclose(item.grid.numpy(), grid[2], atol=1e-2)
    assert item.tokens.tolist() == CAPTIONS[0].tolist()
    batch = next(iter(DataLoader(ds, batch_size=4, collate_fn=collate_captions)))
    grid_b, pooled_b, tokens_b = batch
    assert grid_b.shape == (4, P, C) and grid_b.dtype == torch.float32 and pooled_b.shape == (4, C)
    np.testing.assert_allclose(grid_b[1].numpy(), grid[0], atol=1e-2)
    assert tokens_b.shape == (4, 6)  # the all-pad last column is cut
    batch = collate_captions([ds[1], ds[3]])
    assert batch.tokens.tolist() == [[1, 7, 8, 2], [1, 5, 5, 2]]
    with pytest.raises(ValueError, match="caption_image_index"):
        CaptionDataset(grid, pooled, np.array([0, 1, 2, 3]), CAPTIONS)


@pytest.mark.parametrize("arch,cell", [("show_attend_tell", "lstm"), ("show_tell", "gru")])
def test_loss_falls_on_a_tiny_set(arch, cell):
    grid, pooled = features(8, seed=1)
    index = np.repeat(np.arange(8), 2)
    captions = np.zeros((16, 6), dtype=np.int64)
    for i, img in enumerate(index):  # words are a function of the image
        captions[i] = [1, 4 + img % 4, 4 + (img + i) % 8, 2, 0, 0]
    ds = CaptionDataset(grid, pooled, index, captions)
    loader = DataLoader(ds, batch_size=4, shuffle=True, collate_fn=collate_captions,
                        generator=torch.Generator().manual_seed(0))
    model = make_model(arch, cell, dropout=0.1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    cfg = LossConfig(label_smoothing=0.1, attention_penalty=0.5)
    before = evaluate_loss(model, loader, loss_cfg=cfg)
    assert model.training  # evaluate_loss restores the mode
    for _ in range(8):
        for batch in loader:
            metrics = train_step(model, batch, opt, loss_cfg=cfg, grad_clip=1.0, sampling_prob=0.1)
    after = evaluate_loss(model, loader, loss_cfg=cfg)
    assert set(metrics) == {"loss", "cross_entropy", "nll", "attention_penalty", "num_tokens", "grad_norm"}
    assert after["nll"] < 0.6 * before["nll"]
    assert after["perplexity"] == pytest.approx(np.exp(after["nll"]))
    assert after["num_tokens"] == 16 * 3


@pytest.mark.parametrize("arch,cell", [("show_attend_tell", "lstm"), ("show_attend_tell", "gru"),
                                       ("show_tell", "lstm"), ("show_tell", "gru")])
def test_overfits_one_batch_and_decodes_its_captions(arch, cell):
    grid, pooled = features(4)
    batch = collate_captions(CaptionDataset(grid, pooled, np.arange(4), CAPTIONS).__getitems__(range(4)))
    model = make_model(arch, cell)
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(120):
        metrics = train_step(model, batch, opt, loss_cfg=LossConfig(attention_penalty=0.01), grad_clip=5.0)
    assert metrics["nll"] < 0.05
    model.eval()
    expected = [[t for t in row[1:] if t not in (0, 2)] for row in CAPTIONS.tolist()]
    assert greedy_decode(model, batch.grid, batch.pooled, max_length=8).to_lists() == expected
    assert beam_search(model, batch.grid, batch.pooled, beam_size=3, max_length=8).to_lists() == expected


def test_train_step_clips_and_supports_autocast():
    grid, pooled = features(4)
    batch = collate_captions(CaptionDataset(grid, pooled, np.arange(4), CAPTIONS).__getitems__(range(4)))
    model = make_model("show_attend_tell", "lstm")
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    metrics = train_step(model, batch, opt, grad_clip=1e-3)
    total = torch.cat([p.grad.flatten() for p in model.parameters()]).norm()
    assert metrics["grad_norm"] > 1e-3 and total.item() == pytest.approx(1e-3, rel=1e-3)
    bf16 = train_step(model, batch, opt, autocast_dtype=torch.bfloat16)
    assert np.isfinite(bf16["loss"]) and bf16["loss"] == pytest.approx(metrics["loss"], rel=0.05)


def test_length_buckets_cover_each_caption_once_and_shorten_batches():
    from components.captioning.train import LengthBucketBatches

    rng = np.random.default_rng(0)
    lengths = rng.integers(6, 20, size=1000)
    batches = LengthBucketBatches(lengths, batch_size=32, buckets=8, seed=3)
    batches.set_epoch(0)
    first = list(batches)
    assert len(first) == len(batches)
    assert sorted(i for b in first for i in b) == list(range(1000))  # every caption once
    assert first == list(batches)  # same epoch, same batches (a resumed epoch repeats)
    batches.set_epoch(1)
    assert list(batches) != first
    # the decoder unrolls each batch to its longest caption: bucketing cuts those steps
    plain = [lengths[rng.permutation(1000)[i : i + 32]].max() for i in range(0, 1000, 32)]
    assert sum(lengths[b].max() for b in first) < 0.85 * sum(plain)


def test_length_buckets_split_a_distributed_sampler_into_equal_batch_counts():
    from components.captioning.train import LengthBucketBatches

    lengths = np.arange(101) % 13 + 5
    counts, seen = [], []
    for rank in range(2):
        sampler = torch.utils.data.DistributedSampler(range(101), num_replicas=2, rank=rank, shuffle=True, seed=0)
        batches = LengthBucketBatches(lengths, batch_size=8, buckets=3, seed=0, sampler=sampler)
        batches.set_epoch(2)
        got = list(batches)
        counts.append(len(got))
        seen += [i for b in got for i in b]
    assert counts[0] == counts[1]  # DDP: every rank the same number of steps
    assert set(seen) == set(range(101))


def test_shift_grids_moves_each_grid_by_its_own_offset_and_repeats_the_edges():
    b, side, c = 256, 5, 3
    grid = torch.zeros(b, side, side, c)
    grid[:, 2, 2, 0] = 1.0  # one marked cell in the middle of every grid, channel 0
    grid[:, :, 0, 1] = 7.0  # the left column, channel 1
    batch = CaptionBatch(grid.reshape(b, side * side, c), torch.zeros(b, c), torch.zeros(b, 4, dtype=torch.long))
    out = shift_grids(batch, 2, torch.Generator().manual_seed(0)).grid.reshape(b, side, side, c)
    again = shift_grids(batch, 2, torch.Generator().manual_seed(0)).grid.reshape(b, side, side, c)
    assert torch.equal(out, again)  # seeded
    moves = set()
    for k in range(b):
        (y, x), = (out[k, :, :, 0] == 1.0).nonzero().tolist()  # the mark moved, none lost or doubled
        moves.add((y - 2, x - 2))
        dx = x - 2
        if dx >= 0:  # moved right: the left column repeats into the dx cells entering there
            assert (out[k, :, : dx + 1, 1] == 7.0).all() and (out[k, :, dx + 1 :, 1] == 0.0).all()
        else:  # moved left: the left column left the grid
            assert (out[k, :, :, 1] == 0.0).all()
    assert moves == {(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)}  # every offset drawn
    assert shift_grids(batch, 0, torch.Generator()) is batch
    with pytest.raises(ValueError, match="0..4 for a 5x5 grid, got 5"):
        shift_grids(batch, 5, torch.Generator())
