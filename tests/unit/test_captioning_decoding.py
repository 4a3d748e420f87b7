"""Greedy and beam search: agreement, the batched/reference equality, edge cases."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from components.captioning.decoding import (
    beam_search, beam_search_single, gnmt_length_penalty, greedy_decode, normalized_score,
)
from components.captioning.models import CELLS, MODELS, CaptionerConfig, build_model


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one intra-op thread is faster and immune to OpenMP oversubscription."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


PAD, START, END, UNK, A, B_ = 0, 1, 2, 3, 4, 5
N_IMG, P, C, V = 7, 4, 8, 15
COMBOS = list(itertools.product(MODELS, CELLS))


def random_model(arch: str, cell: str, *, seed: int = 0, end_bias: float = 0.0, scale: float = 3.0,
                 channels: int = C):
    """An untrained model with spread-out predictions; ``end_bias`` shifts the <end> logit."""
    torch.manual_seed(seed)
    cfg = CaptionerConfig(architecture=arch, cell=cell, vocab_size=V, feature_dim=channels, num_positions=P,
                             embed_dim=8, hidden_dim=16, num_layers=1, dropout=0.0, attention_dim=8,
                             grid_layers=0, position_embedding=False)
    model = build_model(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
        model.out.bias[END] += end_bias
    grid = torch.randn(N_IMG, P, channels, generator=torch.Generator().manual_seed(seed + 100))
    return model, grid, grid.mean(1)


class ScriptedModel:
    """Log-probabilities read from a table indexed by (image, step, previous token).

    State: ``(step (N,), image (B,))``; the image index is static memory, one row per image for the
    ``N // B`` rows (beams) of each.
    """

    num_static_state = 1

    def __init__(self, table: torch.Tensor) -> None:
        self.table = table  # (images, steps, V, V) log-probabilities
        self.rows_per_step: list[int] = []

    def init_state(self, grid, pooled):
        n = pooled.shape[0]
        return torch.zeros(n, dtype=torch.long), pooled[:, 0].long()

    def step(self, tokens, state):
        t, img = state
        self.rows_per_step.append(tokens.shape[0])
        rows = img.repeat_interleave(tokens.shape[0] // img.shape[0])  # (N,)
        lp = self.table[rows, t.clamp(max=self.table.shape[1] - 1), tokens]  # (N, V)
        return lp, (t + 1, img), None


def table_from_probs(rows: dict[int, dict[int, float]], images: int = 1, steps: int = 1) -> torch.Tensor:
    """A (images, steps, 6, 6) log-prob table from {previous token: {next: prob}}; the rest ~0."""
    probs = torch.full((6, 6), 1e-9)
    for prev, nxt in rows.items():
        for tok, p in nxt.items():
            probs[prev, tok] = p
    return probs.log().expand(images, steps, 6, 6).clone()


def assert_same(a, b):
    """Identical captions; scores equal up to float rounding (batch sizes differ, so BLAS sums may)."""
    assert torch.equal(a.tokens, b.tokens)
    assert torch.equal(a.lengths, b.lengths)
    assert torch.equal(a.finished, b.finished)
    torch.testing.assert_close(a.log_probs, b.log_probs)
    assert (a.alphas is None) == (b.alphas is None)
    if a.alphas is not None:
        torch.testing.assert_close(a.alphas, b.alphas)


@pytest.mark.parametrize("arch,cell", COMBOS)
@pytest.mark.parametrize("end_bias", [0.0, 1.5])
def test_beam_of_one_is_greedy(arch, cell, end_bias):
    model, grid, pooled = random_model(arch, cell, end_bias=end_bias)
    greedy = greedy_decode(model, grid, pooled, max_length=8)
    for alpha in (0.0, 0.9, 3.0):
        beam = beam_search(model, grid, pooled, beam_size=1, max_length=8, length_penalty=alpha)
        assert_same(beam, greedy)


@pytest.mark.parametrize("arch,cell", COMBOS)
@pytest.mark.parametrize("beam_size,end_bias,alpha", [(2, 0.5, 0.0), (3, 1.0, 0.7), (4, 0.0, 1.0)])
def test_batched_beam_search_equals_per_image_reference(arch, cell, beam_size, end_bias, alpha):
    model, grid, pooled = random_model(arch, cell, end_bias=end_bias)
    kw = dict(beam_size=beam_size, max_length=7, length_penalty=alpha)
    batched = beam_search(model, grid, pooled, **kw)
    reference = beam_search_single(model, grid, pooled, **kw)
    assert_same(batched, reference)
    torch.testing.assert_close(batched.scores, reference.scores)
    assert batched.tokens.shape[0] == N_IMG


@pytest.mark.parametrize("cell", CELLS)
def test_batched_equals_reference_when_attention_mixes_the_annotation_vectors(cell):
    """P >= C: the attention model steps with the vectors themselves, not their projections."""
    model, grid, pooled = random_model("show_attend_tell", cell, end_bias=1.0, channels=P)
    assert not model.project_values
    kw = dict(beam_size=3, max_length=7, length_penalty=0.7)
    assert_same(beam_search(model, grid, pooled, **kw), beam_search_single(model, grid, pooled, **kw))


def test_batched_beam_search_mixes_finished_and_unfinished_images():
    """Images finish at different steps (they leave the batch) while others run to max_length."""
    model, grid, pooled = random_model("show_tell", "gru", end_bias=0.5)
    batched = beam_search(model, grid, pooled, beam_size=3, max_length=7, length_penalty=0.5)
    assert batched.finished.any() and not batched.finished.all()
    assert len(set(batched.lengths.tolist())) >= 2
    assert_same(batched, beam_search_single(model, grid, pooled, beam_size=3, max_length=7, length_penalty=0.5))


@pytest.mark.parametrize("arch", MODELS)
def test_no_end_token_returns_max_length_sequences(arch):
    model, grid, pooled = random_model(arch, "lstm")
    with torch.no_grad():
        model.out.bias[END] = -1e4  # <end> is never among the candidates
    for result in (
        greedy_decode(model, grid, pooled, max_length=5),
        beam_search(model, grid, pooled, beam_size=3, max_length=5, length_penalty=1.0),
        beam_search_single(model, grid, pooled, beam_size=3, max_length=5, length_penalty=1.0),
    ):
        assert result.tokens.shape == (N_IMG, 5)
        assert result.lengths.tolist() == [5] * N_IMG
        assert not result.finished.any()
        assert not (result.tokens == END).any() and not (result.tokens == PAD).any()
        assert torch.isfinite(result.log_probs).all()
    assert_same(beam_search(model, grid, pooled, beam_size=3, max_length=5),
                beam_search_single(model, grid, pooled, beam_size=3, max_length=5))


def test_length_penalty_changes_the_ranking():
    # "<end>" alone: log 0.5 = -0.69 over 1 token; "a <end>": log 0.45 + log 0.95 = -0.85 over 2 tokens.
    table = table_from_probs({START: {END: 0.5, A: 0.45, B_: 0.05}, A: {END: 0.95, B_: 0.05}, B_: {B_: 1.0}})
    model = ScriptedModel(table)
    pooled = torch.zeros(1, 1)
    kw = dict(beam_size=2, max_length=4)
    assert beam_search(model, None, pooled, **kw).to_lists() == [[]]  # raw log-prob: the short one
    assert greedy_decode(model, None, pooled, max_length=4).to_lists() == [[]]
    for alpha in (3.0, 4.0):
        long = beam_search(model, None, pooled, length_penalty=alpha, **kw)
        assert long.tokens.tolist() == [[A, END]] and long.finished.tolist() == [True]
        assert long.log_probs.item() == pytest.approx(math.log(0.45) + math.log(0.95), rel=1e-5)
        expected = long.log_probs.item() / gnmt_length_penalty(torch.tensor(2.0), alpha).item()
        assert long.scores.item() == pytest.approx(expected, rel=1e-5)
        assert_same(long, beam_search_single(model, None, pooled, length_penalty=alpha, **kw))
    # gnmt with alpha = 1 is too weak here: ((5 + 2) / 6) = 1.17 < 0.85 / 0.69
    assert beam_search(model, None, pooled, length_penalty=1.0, **kw).to_lists() == [[]]


def test_images_finish_at_their_own_step():
    """Image i says <end> at step i + 1; batched search keeps each image's own answer."""
    steps, n = 6, 5
    probs = torch.full((n, steps, 6, 6), 1e-9)
    for i in range(n):
        probs[i, :, :, A] = 0.6
        probs[i, :, :, B_] = 0.4
        probs[i, i, :, A], probs[i, i, :, B_], probs[i, i, :, END] = 0.01, 0.01, 0.98
    model = ScriptedModel(probs.log())
    pooled = torch.arange(n, dtype=torch.float32)[:, None]
    result = beam_search(model, None, pooled, beam_size=2, max_length=steps)
    # Image i >= 1 fills its pool (2 beams say <end>) at step i and leaves the batch; image 0 had one live
    # beam at step 0, so it holds one finished hypothesis and runs to max_length, where "<end>" still wins.
    assert model.rows_per_step == [10, 10, 8, 6, 4, 2]
    assert result.lengths.tolist() == [1, 2, 3, 4, 5]
    assert result.to_lists() == [[A] * i for i in range(n)]
    assert (result.tokens[torch.arange(n), result.lengths - 1] == END).all()
    assert_same(result, beam_search_single(model, None, pooled, beam_size=2, max_length=steps))


def test_unfinished_beams_fill_the_pool_at_max_length():
    """One finished hypothesis, then none: the best unfinished beam competes at max_length."""
    table = table_from_probs({START: {END: 0.1, A: 0.9}, A: {A: 1.0}})
    model = ScriptedModel(table)
    result = beam_search(model, None, torch.zeros(1, 1), beam_size=2, max_length=3)
    assert result.tokens.tolist() == [[A, A, A]] and result.finished.tolist() == [False]
    assert result.log_probs.item() == pytest.approx(math.log(0.9), rel=1e-4)


@pytest.mark.parametrize("cell", CELLS)
def test_decoded_attention_rows_sum_to_one_on_tokens(cell):
    model, grid, pooled = random_model("show_attend_tell", cell, end_bias=1.0)
    for result in (greedy_decode(model, grid, pooled, max_length=6),
                   beam_search(model, grid, pooled, beam_size=3, max_length=6)):
        assert result.alphas.shape == (*result.tokens.shape, P)
        valid = torch.arange(result.tokens.shape[1])[None] < result.lengths[:, None]  # (B, L)
        torch.testing.assert_close(result.alphas.sum(-1), valid.float())


def test_normalized_score_and_argument_checks():
    lp = torch.tensor([-2.0, -2.0, -1.0])
    n = torch.tensor([1, 4, 0])
    torch.testing.assert_close(normalized_score(lp, n, length_penalty=1.0),
                               torch.tensor([-2.0 / 1.0, -2.0 / 1.5, -math.inf]))
    torch.testing.assert_close(normalized_score(lp, n, length_penalty=0.0), torch.tensor([-2.0, -2.0, -math.inf]))
    model, grid, pooled = random_model("show_tell", "lstm")
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(model, grid, pooled, beam_size=0, max_length=3)
