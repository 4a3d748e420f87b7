"""Caption decoding: greedy search and beam search over a model's step interface.

The model only needs ``init_state(grid, pooled) -> state`` and
``step(tokens (N,), state) -> (log_probs (N, V), state, alpha (N, P) | None)``
(:class:`components.captioning.models.CaptionModel`), with ``state`` a tuple of
tensors whose dim 0 is the batch. Its last ``model.num_static_state`` tensors
are per-image constants (encoder memory) and keep one row per image: beam
search steps ``K`` rows per image of the others (row ``b * K + j`` is beam
``j`` of image ``b``, so ``N = B * K``) and the model broadcasts an image's
memory over its beams. A copy of the memory per beam would cost ``K`` times
the memory traffic at every step, and the memory is the largest part of the
state.

Conventions shared by every decoder here:

* ``max_length`` counts generated tokens, ``<end>`` included (a caption of
  ``n`` words needs ``n + 1``); ``<start>`` is fed, never returned.
* ``<pad>`` and ``<start>`` are never generated (``banned_ids``).
* Call ``model.eval()`` first: decoding does not change the module's mode.

Beam search (:func:`beam_search`), the rule of fairseq's ``SequenceGenerator``:

1. Each step extends the ``K`` live beams of an image by every token and ranks
   the ``K * V`` candidates by summed log-probability; the ``2K`` best are kept
   (at most ``K`` of them end in ``<end>``, so ``K`` others always exist).
2. A candidate ending in ``<end>`` that ranks among the first ``K`` is a
   finished hypothesis; finished hypotheses are collected, in rank order, until
   the image has ``K``. The first ``K`` candidates not ending in ``<end>`` are
   the next live beams.
3. An image is done when it has ``K`` finished hypotheses; at ``max_length``
   the live beams of images not done fill the remaining places, unfinished
   (so an image whose beams never emit ``<end>`` still gets its best
   ``max_length`` tokens).
4. The answer is the collected hypothesis with the best length-normalised
   score ``log p(y) / lp(|y|)``, ``|y|`` counting ``<end>``, with GNMT's
   ``lp = ((5 + |y|) / 6) ** alpha`` (Wu et al. 2016, eq. 14). ``alpha = 0``
   ranks by raw log-probability; ``alpha > 0`` favours longer captions.

With ``K = 1`` this is exactly greedy search. All images and beams of a batch
advance in one tensor pass (``B * K`` rows); images that are done leave the
batch. :func:`beam_search_single` decodes image by image with plain Python
bookkeeping, the same rule: a slow reference for tests and benchmarks.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from components.data.text import Vocab

State = tuple[Tensor, ...]


def gnmt_length_penalty(length: Tensor, alpha: float) -> Tensor:
    """``((5 + |y|) / 6) ** alpha`` (Wu et al. 2016, "Google's NMT system", eq. 14)."""
    return ((5.0 + length) / 6.0) ** alpha


def normalized_score(log_prob: Tensor, length: Tensor, *, length_penalty: float = 0.0) -> Tensor:
    """Ranking score ``log_prob / lp(length)``; ``-inf`` where ``length == 0``.

    Args:
        log_prob: Summed log-probabilities, any shape.
        length: Token counts (``<end>`` included), same shape.
        length_penalty: ``alpha`` of :func:`gnmt_length_penalty`.
    """
    lp = gnmt_length_penalty(length.to(log_prob.dtype), length_penalty)
    return torch.where(length > 0, log_prob / lp, torch.full_like(log_prob, -math.inf))


@dataclasses.dataclass(frozen=True)
class DecodeResult:
    """Decoded captions of a batch.

    Attributes:
        tokens: ``(B, L)`` int64 generated ids (no ``<start>``; ``<end>`` included
            when emitted), right-padded with ``<pad>``; ``L = lengths.max()``.
        lengths: ``(B,)`` number of generated tokens of each caption.
        scores: ``(B,)`` ranking score, ``log_probs / lp(lengths)``.
        log_probs: ``(B,)`` summed log-probabilities of the tokens.
        finished: ``(B,)`` bool, whether the caption ends with ``<end>``.
        alphas: ``(B, L, P)`` attention weights behind each generated token
            (zeros on padding), or None for models without attention.
    """

    tokens: Tensor
    lengths: Tensor
    scores: Tensor
    log_probs: Tensor
    finished: Tensor
    alphas: Tensor | None = None

    def to_lists(self) -> list[list[int]]:
        """Token ids of each caption, ``<end>`` and padding dropped."""
        out = []
        for row, n, fin in zip(self.tokens.tolist(), self.lengths.tolist(), self.finished.tolist()):
            out.append(row[: n - 1] if fin else row[:n])
        return out


def _check_args(max_length: int, beam_size: int = 1) -> None:
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")


def _ban(log_probs: Tensor, banned: Tensor | None) -> Tensor:
    return log_probs if banned is None else log_probs.index_fill(1, banned, -math.inf)


def _banned_tensor(banned_ids: Sequence[int], device: torch.device) -> Tensor | None:
    return torch.tensor(list(banned_ids), dtype=torch.long, device=device) if banned_ids else None


def _select(state: State, rows: Tensor, *, num_static: int, images: Tensor | None = None) -> State:
    """Rows ``rows`` of the per-hypothesis tensors of ``state``; rows ``images`` of its last
    ``num_static`` (per-image) tensors, or all of them when None."""
    n = len(state) - num_static
    static = state[n:] if images is None else tuple(s.index_select(0, images) for s in state[n:])
    return tuple(s.index_select(0, rows) for s in state[:n]) + static


@torch.no_grad()
def greedy_decode(model: Any, grid: Tensor | None, pooled: Tensor, *, max_length: int,
                  start_id: int = Vocab.start_id, end_id: int = Vocab.end_id, pad_id: int = Vocab.pad_id,
                  banned_ids: Sequence[int] = (Vocab.pad_id, Vocab.start_id)) -> DecodeResult:
    """Most probable token at every step, for the whole batch at once.

    Args:
        model: A caption model (``init_state`` / ``step``), in eval mode.
        grid: ``(B, P, C)`` features (None for models that do not use it).
        pooled: ``(B, C)`` pooled features.
        max_length: Most tokens generated per caption, ``<end>`` included.
        start_id, end_id, pad_id: Special ids.
        banned_ids: Ids never generated.

    Returns:
        :class:`DecodeResult`; ``scores`` equal ``log_probs``.
    """
    _check_args(max_length)
    device = pooled.device
    batch = pooled.shape[0]
    banned = _banned_tensor(banned_ids, device)
    state = model.init_state(grid, pooled)
    tok = torch.full((batch,), start_id, dtype=torch.long, device=device)
    tokens = torch.full((batch, max_length), pad_id, dtype=torch.long, device=device)
    log_prob = torch.zeros(batch, device=device)
    lengths = torch.zeros(batch, dtype=torch.long, device=device)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    alphas: Tensor | None = None
    for t in range(max_length):
        step_lp, state, alpha = model.step(tok, state)  # (B, V), (B, P) | None
        best_lp, tok = _ban(step_lp, banned).max(-1)  # (B,), (B,)
        live = ~finished  # (B,)
        tokens[:, t] = torch.where(live, tok, pad_id)
        log_prob = torch.where(live, log_prob + best_lp, log_prob)
        lengths += live
        if alpha is not None:
            if alphas is None:
                alphas = alpha.new_zeros(batch, max_length, alpha.shape[-1])
            alphas[:, t] = alpha * live[:, None]
        finished = finished | (live & (tok == end_id))
        if bool(finished.all()):
            break
    width = int(lengths.max())
    return DecodeResult(tokens=tokens[:, :width], lengths=lengths, scores=log_prob, log_probs=log_prob,
                        finished=finished, alphas=None if alphas is None else alphas[:, :width])


class SampleResult(NamedTuple):
    """Captions sampled by :func:`sample_captions`, ``N = B * K`` rows (row ``b * K + j``: sample ``j`` of image ``b``).

    A NamedTuple, so that a DDP-wrapped module may return it.

    Attributes:
        tokens: ``(N, T)`` int64 sampled ids (``<end>`` included when emitted), right-padded with ``<pad>``.
        lengths: ``(N,)`` tokens of each sample, ``<end>`` included.
        token_log_probs: ``(N, T)`` log-probability of each sampled token under the sampling
            distribution (with gradients when grad mode is on); 0 after the sample's end.
        mask: ``(N, T)`` float, 1 on each sample's tokens (its ``<end>`` included), 0 after.
        logits: ``(N, T, V)`` float32 tempered logits of every step, banned ids at ``-inf``.
        finished: ``(N,)`` bool, whether the sample emitted ``<end>`` (else it was cut at ``max_length``).
    """

    tokens: Tensor
    lengths: Tensor
    token_log_probs: Tensor
    mask: Tensor
    logits: Tensor
    finished: Tensor

    def to_lists(self) -> list[list[int]]:
        """Token ids of each sample, ``<end>`` and padding dropped."""
        return [row[: n - 1] if fin else row[:n]
                for row, n, fin in zip(self.tokens.tolist(), self.lengths.tolist(), self.finished.tolist())]


def sample_captions(model: Any, grid: Tensor | None, pooled: Tensor, *, samples_per_image: int, max_length: int,
                    generator: torch.Generator | None = None, temperature: float = 1.0,
                    start_id: int = Vocab.start_id, end_id: int = Vocab.end_id, pad_id: int = Vocab.pad_id,
                    banned_ids: Sequence[int] = (Vocab.pad_id, Vocab.start_id)) -> SampleResult:
    """``K`` captions per image drawn token by token from ``softmax(logits / temperature)``.

    The policy of self-critical training: gradients flow into ``token_log_probs``
    (and ``logits``) when grad mode is on, so one pass both samples and scores.
    Banned ids are removed before the softmax (the distribution sampled from is
    the one whose log-probabilities are returned). A sample that has emitted
    ``<end>`` is fed ``<pad>`` and masked from then on; one that never emits
    it is cut at ``max_length`` (``finished`` False). An image's samples share
    its encoder memory, as beams do (:func:`beam_search`).

    Args:
        model: A caption model (``init_state`` / ``step_logits``); its mode is left as it is.
        grid: ``(B, P, C)`` features (None for models that do not use it).
        pooled: ``(B, C)`` pooled features.
        samples_per_image: ``K``.
        max_length: Most tokens per sample, ``<end>`` included.
        generator: Random generator of the draws (on the model's device); None: torch's global one.
        temperature: Divides the logits (1: the model's own distribution).
    """
    _check_args(max_length, samples_per_image)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    device = pooled.device
    n = pooled.shape[0] * samples_per_image
    banned = _banned_tensor(banned_ids, device)
    state = _select(model.init_state(grid, pooled),
                    torch.arange(pooled.shape[0], device=device).repeat_interleave(samples_per_image),
                    num_static=getattr(model, "num_static_state", 0))
    tok = torch.full((n,), start_id, dtype=torch.long, device=device)
    finished = torch.zeros(n, dtype=torch.bool, device=device)
    tokens, log_probs, masks, all_logits = [], [], [], []
    for _ in range(max_length):
        logits, state, _ = model.step_logits(tok, state)  # (N, V)
        logits = _ban(logits.float() / temperature, banned)
        logp = logits.log_softmax(-1)  # (N, V)
        drawn = torch.multinomial(logp.detach().exp(), 1, generator=generator).squeeze(1)  # (N,)
        live = ~finished
        tok = torch.where(live, drawn, pad_id)
        tokens.append(tok)
        log_probs.append(logp.gather(1, drawn[:, None]).squeeze(1) * live)
        masks.append(live.float())
        all_logits.append(logits)
        finished = finished | (live & (drawn == end_id))
        if bool(finished.all()):
            break
    mask = torch.stack(masks, 1)  # (N, T)
    return SampleResult(tokens=torch.stack(tokens, 1), lengths=mask.sum(1).long(),
                        token_log_probs=torch.stack(log_probs, 1), mask=mask, logits=torch.stack(all_logits, 1),
                        finished=finished)


@torch.no_grad()
def beam_search(model: Any, grid: Tensor | None, pooled: Tensor, *, beam_size: int, max_length: int,
                length_penalty: float = 0.0,
                start_id: int = Vocab.start_id, end_id: int = Vocab.end_id, pad_id: int = Vocab.pad_id,
                banned_ids: Sequence[int] = (Vocab.pad_id, Vocab.start_id)) -> DecodeResult:
    """Batched beam search (the rule in the module docstring): one tensor pass per step.

    Args:
        model: A caption model (``init_state`` / ``step``), in eval mode.
        grid: ``(B, P, C)`` features (None for models that do not use it).
        pooled: ``(B, C)`` pooled features.
        beam_size: ``K``, live beams per image.
        max_length: Most tokens generated per caption, ``<end>`` included.
        length_penalty: ``alpha`` of the length normalisation (0: raw log-probability).
        start_id, end_id, pad_id: Special ids.
        banned_ids: Ids never generated.

    Returns:
        :class:`DecodeResult` with the best hypothesis of each image.
    """
    _check_args(max_length, beam_size)
    device = pooled.device
    batch, k = pooled.shape[0], beam_size
    banned = _banned_tensor(banned_ids, device)
    num_static = getattr(model, "num_static_state", 0)
    img_rows = torch.arange(k, device=device)  # (K,)

    # (B*K, ...): row b*K + j is beam j of image b; the per-image memory keeps its B rows
    state = _select(model.init_state(grid, pooled), torch.arange(batch, device=device).repeat_interleave(k),
                    num_static=num_static)

    # Finished hypotheses of every image, fixed shape (B, K, ...).
    pool_tokens = torch.full((batch, k, max_length), pad_id, dtype=torch.long, device=device)
    pool_alphas: Tensor | None = None
    pool_logp = torch.full((batch, k), -math.inf, device=device)
    pool_len = torch.zeros(batch, k, dtype=torch.long, device=device)
    pool_done = torch.zeros(batch, k, dtype=torch.bool, device=device)  # ended with <end>
    pool_count = torch.zeros(batch, dtype=torch.long, device=device)

    # Live beams of the A images still searching; active[a] is the image of row a.
    active = torch.arange(batch, device=device)  # (A,)
    live_logp = torch.full((batch, k), -math.inf, device=device)
    live_logp[:, 0] = 0.0  # one live beam at the start, so the first step has no duplicates
    live_tokens = torch.zeros(batch, k, 0, dtype=torch.long, device=device)  # (A, K, t)
    live_alphas: Tensor | None = None  # (A, K, t, P)
    tok = torch.full((batch * k,), start_id, dtype=torch.long, device=device)  # (A*K,)
    rank = torch.arange(2 * k, device=device)  # (2K,)

    for t in range(max_length):
        step_lp, state, alpha = model.step(tok, state)  # (A*K, V), (A*K, P) | None
        n_act, vocab = active.numel(), step_lp.shape[-1]
        cand = (live_logp.reshape(-1, 1) + _ban(step_lp, banned)).view(n_act, k * vocab)  # (A, K*V)
        top_logp, top_idx = cand.topk(2 * k, dim=1)  # (A, 2K), best first
        parent = top_idx // vocab  # (A, 2K) beam index within the image
        word = top_idx % vocab  # (A, 2K)
        is_end = word == end_id
        if alpha is not None:
            alpha = alpha.view(n_act, k, -1)  # (A, K, P)
            if pool_alphas is None:
                pool_alphas = alpha.new_zeros(batch, k, max_length, alpha.shape[-1])
                live_alphas = alpha.new_zeros(n_act, k, 0, alpha.shape[-1])

        # 1. <end> candidates ranked in the first K join the pool, in rank order, up to K per image.
        fin = is_end & (rank < k) & torch.isfinite(top_logp)  # (A, 2K)
        slot = pool_count[active][:, None] + fin.cumsum(1) - 1  # (A, 2K)
        fin &= slot < k
        a_idx, c_idx = fin.nonzero(as_tuple=True)  # (F,), (F,)
        if a_idx.numel():
            img, s, par = active[a_idx], slot[a_idx, c_idx], parent[a_idx, c_idx]
            pool_tokens[img, s, :t] = live_tokens[a_idx, par]
            pool_tokens[img, s, t] = end_id
            pool_logp[img, s] = top_logp[a_idx, c_idx]
            pool_len[img, s] = t + 1
            pool_done[img, s] = True
            if alpha is not None:
                pool_alphas[img, s, :t] = live_alphas[a_idx, par]
                pool_alphas[img, s, t] = alpha[a_idx, par]
            pool_count.index_add_(0, img, torch.ones_like(img))

        # 2. The first K candidates not ending in <end> are the next live beams.
        keep = torch.argsort(is_end.to(torch.uint8), dim=1, stable=True)[:, :k]  # (A, K)
        live_logp = top_logp.gather(1, keep)  # (A, K)
        par = parent.gather(1, keep)  # (A, K)
        new_word = word.gather(1, keep)  # (A, K)
        live_tokens = torch.cat(
            [live_tokens.gather(1, par[..., None].expand(-1, -1, t)), new_word[..., None]], 2
        )  # (A, K, t+1)
        if alpha is not None:
            p = alpha.shape[-1]
            live_alphas = torch.cat(
                [live_alphas.gather(1, par[..., None, None].expand(-1, -1, t, p)),
                 alpha.gather(1, par[..., None].expand(-1, -1, p))[:, :, None]], 2
            )  # (A, K, t+1, P)
        rows = (torch.arange(n_act, device=device)[:, None] * k + par).view(-1)  # (A*K,)
        state = _select(state, rows, num_static=num_static)  # beams stay within their image
        tok = new_word.view(-1)

        # 3. Images with K finished hypotheses are done and leave the batch.
        done = pool_count[active] >= k  # (A,)
        if bool(done.any()):
            still = (~done).nonzero().squeeze(1)  # (A',)
            active = active[still]
            if active.numel() == 0:
                break
            live_logp, live_tokens = live_logp[still], live_tokens[still]
            if live_alphas is not None:
                live_alphas = live_alphas[still]
            rows = (still[:, None] * k + img_rows).view(-1)  # (A'*K,)
            state = _select(state, rows, num_static=num_static, images=still)  # memory too: whole images leave
            tok = tok[rows]

    # 4. At max_length, live beams (best first) fill the places left in the pool, unfinished.
    if active.numel():
        fill = torch.isfinite(live_logp)  # (A, K)
        slot = pool_count[active][:, None] + fill.cumsum(1) - 1
        fill &= slot < k
        a_idx, b_idx = fill.nonzero(as_tuple=True)
        img, s = active[a_idx], slot[a_idx, b_idx]
        pool_tokens[img, s] = live_tokens[a_idx, b_idx]  # (F, max_length)
        pool_logp[img, s] = live_logp[a_idx, b_idx]
        pool_len[img, s] = max_length
        if pool_alphas is not None:
            pool_alphas[img, s] = live_alphas[a_idx, b_idx]

    # 5. Best normalised score per image (first on ties).
    scores = normalized_score(pool_logp, pool_len, length_penalty=length_penalty)  # (B, K)
    best = scores.argmax(1)  # (B,)
    ar = torch.arange(batch, device=device)
    lengths = pool_len[ar, best]
    width = int(lengths.max())
    return DecodeResult(
        tokens=pool_tokens[ar, best, :width], lengths=lengths, scores=scores[ar, best],
        log_probs=pool_logp[ar, best], finished=pool_done[ar, best],
        alphas=None if pool_alphas is None else pool_alphas[ar, best, :width],
    )


@dataclasses.dataclass
class _Hypothesis:
    log_prob: Tensor  # 0-d float32
    tokens: list[int]
    alphas: list[Tensor]
    finished: bool = False


def _beam_search_one(model: Any, grid: Tensor | None, pooled: Tensor, *, beam_size: int, max_length: int,
                     length_penalty: float, start_id: int, end_id: int,
                     banned: Tensor | None) -> _Hypothesis:
    """Beam search of one image (``pooled`` ``(1, C)``), bookkeeping in Python lists."""
    k = beam_size
    device = pooled.device
    num_static = getattr(model, "num_static_state", 0)
    state = _select(model.init_state(grid, pooled), torch.zeros(k, dtype=torch.long, device=device),
                    num_static=num_static)  # (K, ...); the memory keeps its one row
    beams = [_Hypothesis(torch.tensor(0.0 if j == 0 else -math.inf, device=device), [], []) for j in range(k)]
    tok = torch.full((k,), start_id, dtype=torch.long, device=device)
    finished: list[_Hypothesis] = []
    for _ in range(max_length):
        step_lp, state, alpha = model.step(tok, state)  # (K, V), (K, P) | None
        vocab = step_lp.shape[-1]
        live_lp = torch.stack([h.log_prob for h in beams])  # (K,)
        cand = (live_lp[:, None] + _ban(step_lp, banned)).view(-1)  # (K*V,)
        top_logp, top_idx = cand.topk(2 * k)
        chosen: list[tuple[Tensor, int, int]] = []  # (log_prob, parent, word)
        for r in range(2 * k):
            parent, word = divmod(int(top_idx[r]), vocab)
            score = top_logp[r]
            step_alpha = [] if alpha is None else [alpha[parent]]
            if word == end_id:
                if r < k and len(finished) < k and math.isfinite(float(score)):
                    src = beams[parent]
                    finished.append(_Hypothesis(score, src.tokens + [end_id], src.alphas + step_alpha, True))
            elif len(chosen) < k:
                chosen.append((score, parent, word))
        beams = [
            _Hypothesis(score, beams[p].tokens + [w], beams[p].alphas + ([] if alpha is None else [alpha[p]]))
            for score, p, w in chosen
        ]
        state = _select(state, torch.tensor([p for _, p, _ in chosen], device=device), num_static=num_static)
        tok = torch.tensor([w for _, _, w in chosen], dtype=torch.long, device=device)
        if len(finished) >= k:
            break
    else:
        for h in beams:
            if len(finished) < k and math.isfinite(float(h.log_prob)):
                finished.append(h)
    lengths = torch.tensor([len(h.tokens) for h in finished], device=device)
    scores = normalized_score(torch.stack([h.log_prob for h in finished]), lengths,
                              length_penalty=length_penalty)
    best = 0
    for i in range(1, len(finished)):
        if scores[i] > scores[best]:
            best = i
    return finished[best]


@torch.no_grad()
def beam_search_single(model: Any, grid: Tensor | None, pooled: Tensor, *, beam_size: int, max_length: int,
                       length_penalty: float = 0.0,
                       start_id: int = Vocab.start_id, end_id: int = Vocab.end_id, pad_id: int = Vocab.pad_id,
                       banned_ids: Sequence[int] = (Vocab.pad_id, Vocab.start_id)) -> DecodeResult:
    """Reference beam search: the rule of :func:`beam_search`, one image at a time.

    Slow on purpose (a Python loop over images, beams and candidates); used to
    check :func:`beam_search` and as the baseline of the decoding benchmark.
    Same arguments and result as :func:`beam_search`.
    """
    _check_args(max_length, beam_size)
    banned = _banned_tensor(banned_ids, pooled.device)
    hyps = [
        _beam_search_one(model, None if grid is None else grid[i:i + 1], pooled[i:i + 1], beam_size=beam_size,
                         max_length=max_length, length_penalty=length_penalty, start_id=start_id, end_id=end_id,
                         banned=banned)
        for i in range(pooled.shape[0])
    ]
    device = pooled.device
    lengths = torch.tensor([len(h.tokens) for h in hyps], dtype=torch.long, device=device)
    width = int(lengths.max())
    tokens = torch.full((len(hyps), width), pad_id, dtype=torch.long, device=device)
    for i, h in enumerate(hyps):
        tokens[i, : len(h.tokens)] = torch.tensor(h.tokens, dtype=torch.long, device=device)
    log_probs = torch.stack([h.log_prob for h in hyps])
    alphas = None
    if hyps[0].alphas:
        alphas = hyps[0].alphas[0].new_zeros(len(hyps), width, hyps[0].alphas[0].shape[-1])
        for i, h in enumerate(hyps):
            alphas[i, : len(h.alphas)] = torch.stack(h.alphas)
    return DecodeResult(
        tokens=tokens, lengths=lengths,
        scores=normalized_score(log_probs, lengths, length_penalty=length_penalty),
        log_probs=log_probs, finished=torch.tensor([h.finished for h in hyps], device=device), alphas=alphas,
    )


__all__ = [
    "DecodeResult", "SampleResult", "beam_search", "beam_search_single", "gnmt_length_penalty",
    "greedy_decode", "normalized_score", "sample_captions",
]
