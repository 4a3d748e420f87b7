"""Caption decoders over cached CNN features: Show-and-Tell and Show-Attend-and-Tell.

Both models read the features the ``features`` stage caches per image:

* ``grid``   ``(B, P, C)``: the CNN's last convolutional map, ``P`` positions
  (e.g. 7x7 = 49) of ``C`` channels (the "annotation vectors" of Xu et al.);
* ``pooled`` ``(B, C)``: the same map average-pooled.

and caption token ids ``(B, T)``: ``<start> w1 .. wn <end>`` right-padded with
``<pad>`` (ids in :mod:`components.data.text`).

Two interfaces, one set of weights:

* ``model(grid, pooled, tokens, *, sampling_prob=0.0)`` -> :class:`CaptionOutput`,
  the teacher-forced training pass: inputs ``tokens[:, :-1]``, logits for the
  targets ``tokens[:, 1:]`` (``(B, T-1, V)``), plus the attention weights
  ``(B, T-1, P)`` of attention models. ``sampling_prob > 0`` turns on scheduled
  sampling (Bengio et al. 2015).
* ``init_state(grid, pooled)`` / ``step(tokens_t, state)``, the step-wise pass
  used by :mod:`components.captioning.decoding`. ``state`` is a tuple of tensors
  whose first dimension is the batch, so beams are gathered with
  ``index_select(0, rows)``. The last ``num_static_state`` tensors of a state
  are encoder memory that never changes while decoding (what the attention
  reads and its keys), one row per image: ``step`` may get ``K`` rows per image
  of the other tensors (the beams of beam search, row ``b * K + j`` beam ``j``
  of image ``b``), which share their image's memory.

Models are built from a :class:`CaptionerConfig` by :func:`build_model`
through the :data:`MODELS` registry; the recurrent cell comes from
:data:`CELLS`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from components import config as config_lib
from components.captioning.config import Architecture, AttentionKind, Cell
from components.config import ConfigError
from components.data.text import Vocab

State = tuple[Tensor, ...]
"""A decoder state: tensors with the batch as their first dimension."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class CaptionerConfig:
    """Everything needed to rebuild a caption model (saved as ``config.json``).

    Attributes:
        architecture: A key of :data:`MODELS`: ``show_tell`` | ``show_attend_tell``.
        cell: A key of :data:`CELLS`: ``lstm`` | ``gru``.
        vocab_size: Number of token ids, specials included (``len(vocab)``).
        feature_dim: Channels ``C`` of the cached CNN features.
        num_positions: Positions ``P`` of the feature grid (e.g. 49 for 7x7).
        embed_dim: Word (and, for Show-and-Tell, image) embedding size.
        hidden_dim: Recurrent state size.
        num_layers: Stacked recurrent layers.
        dropout: Dropout on embeddings, outputs and between recurrent layers.
        attention_dim: Size of the attention's keys and query: the hidden layer of
            the additive score, the projections of the dot-product one
            (``show_attend_tell`` only).
        grid_layers: Residual 3x3 convolution blocks trained on top of the
            cached grid (``show_attend_tell`` only; needs a square grid). They
            are the trainable top of the encoder: the cached CNN stays frozen.
        position_embedding: Add a learned embedding of each grid position to
            the attention memory (``show_attend_tell`` only), so the context
            vector says *where* the decoder looked, not only what it saw.
        grid_stride: 1, or 2: a learned 3x3 stride-2 convolution first halves the
            grid's side (``show_attend_tell`` only; a square grid of even side), so
            the decoder attends over a quarter of the positions while the encoder
            still reads the finer cached map (small shapes, README §Captioner).
        grid_self_attention: Transformer encoder layers (pre-norm, 4 heads) over
            the grid positions after the position embedding (``show_attend_tell``
            only): each annotation vector can then say where it is *relative to*
            the other objects, which the additive attention, scoring every
            position on its own, cannot work out (which of two objects is on top
            decides which one a caption names first).
        attention: A key of :data:`ATTENTIONS`: ``additive`` (Bahdanau's score,
            Xu et al.'s) | ``dot`` (scaled dot product of projected query and
            keys; no ``tanh`` over every position and step, README §Speed).
    """

    architecture: Architecture
    cell: Cell
    vocab_size: int
    feature_dim: int
    num_positions: int
    embed_dim: int
    hidden_dim: int
    num_layers: int
    dropout: float
    attention_dim: int
    grid_layers: int
    position_embedding: bool
    grid_stride: int = 1
    grid_self_attention: int = 0
    attention: AttentionKind = "additive"

    def __post_init__(self) -> None:
        config_lib.check_choices(self)
        for name in ("feature_dim", "num_positions", "embed_dim", "hidden_dim", "num_layers", "attention_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.grid_layers < 0:
            raise ConfigError(f"grid_layers must be >= 0, got {self.grid_layers}")
        side = math.isqrt(self.num_positions)
        square = side * side == self.num_positions
        if self.grid_layers and not square:
            raise ConfigError(f"grid_layers needs a square grid, got {self.num_positions} positions")
        if self.grid_self_attention < 0:
            raise ConfigError(f"grid_self_attention must be >= 0, got {self.grid_self_attention}")
        if self.grid_self_attention and self.feature_dim % 4:
            raise ConfigError(f"grid_self_attention needs feature_dim divisible by its 4 heads, got {self.feature_dim}")
        if self.grid_stride not in (1, 2):
            raise ConfigError(f"grid_stride must be 1 or 2, got {self.grid_stride}")
        if self.grid_stride == 2 and (not square or side % 2):
            raise ConfigError(f"grid_stride 2 needs a square grid of even side, got {self.num_positions} positions")
        if self.vocab_size <= Vocab.unk_id:
            raise ConfigError(f"vocab_size must exceed the {Vocab.unk_id + 1} special tokens, got {self.vocab_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def memory_positions(self) -> int:
        """Positions the decoder attends over: ``num_positions`` / ``grid_stride``²."""
        return self.num_positions // self.grid_stride ** 2

    def to_dict(self) -> dict[str, Any]:
        """The config as a plain JSON-able dict."""
        return config_lib.to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "<model config>") -> CaptionerConfig:
        """Strict inverse of :meth:`to_dict`: an unknown, missing or mistyped key is an error.

        Raises:
            components.config.ConfigError: Naming the key and ``source``.
        """
        return config_lib.build(cls, data, source=source)


class CaptionOutput(NamedTuple):
    """What the training pass returns (a NamedTuple, so DDP can traverse it).

    Attributes:
        logits: ``(B, T-1, V)`` scores of the targets ``tokens[:, 1:]``.
        alphas: ``(B, T-1, P)`` attention weights per step (rows sum to 1), or
            ``None`` for models without attention.
    """

    logits: Tensor
    alphas: Tensor | None


# --------------------------------------------------------------------------- cells


class RecurrentCore(nn.Module):
    """A stack of LSTM or GRU layers run over a sequence or one step at a time.

    Wraps ``nn.LSTM`` / ``nn.GRU`` (cuDNN kernels for whole sequences) but keeps
    the state batch-first: a tuple of ``(B, num_layers, H)`` tensors, so a
    decoder state can be gathered along dim 0 like everything else.
    """

    rnn_class: ClassVar[type[nn.RNNBase]]
    state_names: ClassVar[tuple[str, ...]]

    def __init__(self, *, input_dim: int, hidden_dim: int, num_layers: int, dropout: float) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.rnn = self.rnn_class(
            input_dim, hidden_dim, num_layers=num_layers, batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )

    def zero_state(self, batch_size: int, *, like: Tensor) -> State:
        """All-zero state, ``len(state_names)`` tensors of ``(B, L, H)``."""
        shape = (batch_size, self.num_layers, self.hidden_dim)
        return tuple(like.new_zeros(shape) for _ in self.state_names)

    def _pack(self, state: State) -> Any:
        raise NotImplementedError

    def _unpack(self, hx: Any) -> State:
        raise NotImplementedError

    def forward(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """Run ``x`` ``(B, T, I)`` from ``state``; returns ``((B, T, H), new state)``."""
        out, hx = self.rnn(x, self._pack(tuple(s.transpose(0, 1).contiguous() for s in state)))
        return out, tuple(s.transpose(0, 1) for s in self._unpack(hx))  # (B, L, H) each

    def input_gates(self, x: Tensor) -> Tensor:
        """Layer 0's input projection with its bias, ``(..., I) -> (..., G)``: the part of a step
        that does not depend on the state, so a caller can compute it for all steps at once."""
        return F.linear(x, self.rnn.weight_ih_l0, self.rnn.bias_ih_l0)

    def cell(self, layer: int, gates_x: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """One step of one layer from its input gates ``(B, G)``; ``state`` and the result are
        ``state_names`` tensors of ``(B, H)``. The same maths (and weights) as ``self.rnn``."""
        raise NotImplementedError

    def step_layers(self, gates_x: Tensor, layers: list[tuple[Tensor, ...]]) -> list[tuple[Tensor, ...]]:
        """One step of the whole stack from layer 0's input gates (see :meth:`input_gates`).

        ``layers``: per layer, its ``(B, H)`` state tensors. Between layers, dropout as
        ``nn.LSTM`` / ``nn.GRU`` apply it (training only). Returns the new per-layer states;
        the top layer's output is ``result[-1][0]``.
        """
        new = [self.cell(0, gates_x, layers[0])]
        for layer in range(1, self.num_layers):
            x = F.dropout(new[-1][0], self.rnn.dropout, self.training)
            gates = F.linear(x, getattr(self.rnn, f"weight_ih_l{layer}"), getattr(self.rnn, f"bias_ih_l{layer}"))
            new.append(self.cell(layer, gates, layers[layer]))
        return new

    def split_state(self, state: State) -> list[tuple[Tensor, ...]]:
        """``(B, L, H)`` state tensors -> per layer, its ``(B, H)`` tensors."""
        return [tuple(s[:, layer] for s in state) for layer in range(self.num_layers)]

    @staticmethod
    def join_state(layers: list[tuple[Tensor, ...]]) -> State:
        """Inverse of :meth:`split_state`."""
        return tuple(torch.stack(parts, 1) for parts in zip(*layers))


class LSTMCore(RecurrentCore):
    """LSTM (Hochreiter & Schmidhuber 1997); state ``(h, c)``."""

    rnn_class = nn.LSTM
    state_names = ("h", "c")

    def _pack(self, state: State) -> tuple[Tensor, Tensor]:
        return state[0], state[1]

    def _unpack(self, hx: tuple[Tensor, Tensor]) -> State:
        return tuple(hx)

    def cell(self, layer: int, gates_x: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        h, c = state
        gates = gates_x + F.linear(h, getattr(self.rnn, f"weight_hh_l{layer}"), getattr(self.rnn, f"bias_hh_l{layer}"))
        i, f, g, o = gates.chunk(4, 1)  # PyTorch's gate order
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class GRUCore(RecurrentCore):
    """GRU (Cho et al. 2014); state ``(h,)``."""

    rnn_class = nn.GRU
    state_names = ("h",)

    def _pack(self, state: State) -> Tensor:
        return state[0]

    def _unpack(self, hx: Tensor) -> State:
        return (hx,)

    def cell(self, layer: int, gates_x: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor]:
        (h,) = state
        gates_h = F.linear(h, getattr(self.rnn, f"weight_hh_l{layer}"), getattr(self.rnn, f"bias_hh_l{layer}"))
        x_r, x_z, x_n = gates_x.chunk(3, 1)
        h_r, h_z, h_n = gates_h.chunk(3, 1)
        r = torch.sigmoid(x_r + h_r)
        z = torch.sigmoid(x_z + h_z)
        n = torch.tanh(x_n + r * h_n)
        return ((1 - z) * n + z * h,)


CELLS: dict[str, type[RecurrentCore]] = {"lstm": LSTMCore, "gru": GRUCore}


# --------------------------------------------------------------------------- models


class CaptionModel(nn.Module):
    """Interface shared by the caption decoders (see the module docstring).

    Subclasses implement :meth:`init_state` and :meth:`step_logits`; the
    teacher-forced / scheduled-sampling pass and :meth:`step` come from here.
    """

    num_static_state: ClassVar[int] = 0
    """How many trailing state tensors are per-image constants (encoder memory)."""
    uses_attention: ClassVar[bool] = False

    def __init__(self, cfg: CaptionerConfig) -> None:
        super().__init__()
        self.config = cfg

    def init_state(self, grid: Tensor | None, pooled: Tensor) -> State:
        """Decoder state before the ``<start>`` token, from the image features."""
        raise NotImplementedError

    def step_logits(self, tokens: Tensor, state: State) -> tuple[Tensor, State, Tensor | None]:
        """One step: input ids ``(B,)`` -> (logits ``(B, V)``, new state, alpha ``(B, P)`` or None)."""
        raise NotImplementedError

    def step(self, tokens: Tensor, state: State) -> tuple[Tensor, State, Tensor | None]:
        """One decoding step: (log-probabilities ``(B, V)`` in float32, new state, alpha or None)."""
        logits, state, alpha = self.step_logits(tokens, state)
        return logits.float().log_softmax(-1), state, alpha

    def forward(self, grid: Tensor | None, pooled: Tensor, tokens: Tensor, *, sampling_prob: float = 0.0,
                generator: torch.Generator | None = None) -> CaptionOutput:
        """Training pass over whole captions.

        Args:
            grid: ``(B, P, C)`` feature grid (unused by Show-and-Tell, may be None there).
            pooled: ``(B, C)`` pooled features.
            tokens: ``(B, T)`` ids ``<start> .. <end> <pad>..``; ``T >= 2``.
            sampling_prob: Scheduled sampling (Bengio et al. 2015, sec. 2.1): at
                every step after the first, each caption's input is, with this
                probability, a token sampled from the model's own previous
                output distribution instead of the ground-truth token. 0 is
                plain teacher forcing.
            generator: Random generator for scheduled sampling (on the model's device).

        Returns:
            :class:`CaptionOutput` with logits ``(B, T-1, V)`` for ``tokens[:, 1:]``.
        """
        if tokens.dim() != 2 or tokens.shape[1] < 2:
            raise ValueError(f"tokens must be (B, T) with T >= 2, got {tuple(tokens.shape)}")
        if not 0.0 <= sampling_prob <= 1.0:
            raise ValueError(f"sampling_prob must be in [0, 1], got {sampling_prob}")
        if not bool((tokens[:, 1:] != Vocab.pad_id).any()):
            raise ValueError(f"tokens {tuple(tokens.shape)} hold no target: every caption is <start> then "
                             "padding (each needs at least its <end>)")
        if sampling_prob > 0.0:
            return self._unroll(grid, pooled, tokens, sampling_prob=sampling_prob, generator=generator)
        return self._teacher_forced(grid, pooled, tokens)

    def _teacher_forced(self, grid: Tensor | None, pooled: Tensor, tokens: Tensor) -> CaptionOutput:
        return self._unroll(grid, pooled, tokens, sampling_prob=0.0, generator=None)

    def _unroll(self, grid: Tensor | None, pooled: Tensor, tokens: Tensor, *, sampling_prob: float,
                generator: torch.Generator | None) -> CaptionOutput:
        """Step-by-step pass, optionally feeding back the model's own samples."""
        state = self.init_state(grid, pooled)
        inputs = tokens[:, :-1]  # (B, T-1)
        steps: list[Tensor] = []
        alphas: list[Tensor] = []
        for t in range(inputs.shape[1]):
            tok = inputs[:, t]  # (B,)
            if sampling_prob > 0.0 and steps:
                probs = steps[-1].detach().float().softmax(-1)  # (B, V)
                sampled = torch.multinomial(probs, 1, generator=generator).squeeze(1)  # (B,)
                coin = torch.rand(tok.shape, device=tok.device, generator=generator) < sampling_prob
                tok = torch.where(coin, sampled, tok)
            logits, state, alpha = self.step_logits(tok, state)
            steps.append(logits)
            if alpha is not None:
                alphas.append(alpha)
        return CaptionOutput(torch.stack(steps, 1), torch.stack(alphas, 1) if alphas else None)

    def _check_features(self, name: str, x: Tensor, shape: tuple[int, ...]) -> None:
        if x.dim() != len(shape) + 1 or tuple(x.shape[1:]) != shape:
            raise ValueError(f"{name} must be (B, {', '.join(map(str, shape))}), got {tuple(x.shape)}")


class ShowTell(CaptionModel):
    """Show and Tell (Vinyals et al. 2015, "Show and Tell: A Neural Image Caption Generator").

    The image conditions the decoder once, as its first input: the pooled CNN
    feature is projected into the word-embedding space (``x_{-1} = W_I CNN(I)``,
    eq. 10) and run through the recurrent core from a zero state; words follow
    from ``<start>``. (The paper found feeding the image at every step worse.)
    Output ``p_t = softmax(W_o h_t)``.
    """

    def __init__(self, cfg: CaptionerConfig) -> None:
        super().__init__(cfg)
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed_dim, padding_idx=Vocab.pad_id)
        self.image_proj = nn.Linear(cfg.feature_dim, cfg.embed_dim)
        self.core = CELLS[cfg.cell](input_dim=cfg.embed_dim, hidden_dim=cfg.hidden_dim,
                                    num_layers=cfg.num_layers, dropout=cfg.dropout)
        self.dropout = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.hidden_dim, cfg.vocab_size)

    def init_state(self, grid: Tensor | None, pooled: Tensor) -> State:
        self._check_features("pooled", pooled, (self.config.feature_dim,))
        image = self.image_proj(pooled)[:, None]  # (B, 1, E)
        _, state = self.core(image, self.core.zero_state(pooled.shape[0], like=image))
        return state  # (B, L, H) each

    def step_logits(self, tokens: Tensor, state: State) -> tuple[Tensor, State, None]:
        x = self.dropout(self.embed(tokens))[:, None]  # (B, 1, E)
        out, state = self.core(x, state)  # (B, 1, H)
        return self.out(self.dropout(out[:, 0])), state, None  # (B, V)

    def _teacher_forced(self, grid: Tensor | None, pooled: Tensor, tokens: Tensor) -> CaptionOutput:
        # Whole sequence through the fused RNN kernel; same maths as step_logits.
        state = self.init_state(grid, pooled)
        x = self.dropout(self.embed(tokens[:, :-1]))  # (B, T-1, E)
        out, _ = self.core(x, state)  # (B, T-1, H)
        return CaptionOutput(self.out(self.dropout(out)), None)  # (B, T-1, V)


class AdditiveAttention(nn.Module):
    """Soft attention of Xu et al. 2015 (eq. 4-6) with the additive score of Bahdanau et al. 2015.

    ``e_ti = w^T tanh(W_a a_i + W_h h_{t-1})``, ``alpha_t = softmax_i(e_t)``,
    context ``sum_i alpha_ti a_i``.
    """

    def __init__(self, *, feature_dim: int, hidden_dim: int, attention_dim: int) -> None:
        super().__init__()
        self.memory_proj = nn.Linear(feature_dim, attention_dim)
        self.query_proj = nn.Linear(hidden_dim, attention_dim)
        self.score = nn.Linear(attention_dim, 1)

    def project_memory(self, memory: Tensor) -> Tensor:
        """``W_a a_i``, computed once per image: ``(B, P, C) -> (B, P, A)``."""
        return self.memory_proj(memory)

    def forward(self, query: Tensor, memory: Tensor, keys: Tensor) -> tuple[Tensor, Tensor]:
        """Attend ``memory`` ``(B, P, D)`` (keys ``(B, P, A)``) with ``query`` ``(B*K, H)``, ``K`` queries
        per image: rows ``b*K`` to ``b*K + K-1`` read image ``b``. Returns the context ``(B*K, D)`` and
        alpha ``(B*K, P)``.

        ``K`` is 1 but in beam search (one query per beam). The beams of an image share its keys and
        memory by broadcasting, so a step reads each image's memory once, not once per beam.
        """
        b, n = keys.shape[0], query.shape[0]
        q = self.query_proj(query).view(b, n // b, 1, -1)  # (B, K, 1, A)
        e = self.score(torch.tanh(keys[:, None] + q)).squeeze(-1)  # (B, K, P)
        alpha = e.float().softmax(-1)  # (B, K, P)
        context = torch.bmm(alpha.to(memory.dtype), memory)  # (B, K, D)
        return context.view(n, -1), alpha.view(n, -1)


class DotProductAttention(nn.Module):
    """Soft attention with a scaled dot-product score (Luong et al. 2015's "general" score, scaled as in
    Vaswani et al. 2017): ``e_ti = (W_h h_{t-1})^T (W_a a_i) / sqrt(A)``.

    The same keys and interface as :class:`AdditiveAttention`, without its ``tanh`` over ``(B, P, A)``
    and the score layer: one batched matrix product per step, which is what the additive score's
    share of a training step was (README §Speed).
    """

    def __init__(self, *, feature_dim: int, hidden_dim: int, attention_dim: int) -> None:
        super().__init__()
        self.memory_proj = nn.Linear(feature_dim, attention_dim)
        self.query_proj = nn.Linear(hidden_dim, attention_dim)
        self.scale = attention_dim ** -0.5

    def project_memory(self, memory: Tensor) -> Tensor:
        """The keys ``W_a a_i``, computed once per image: ``(B, P, C) -> (B, P, A)``."""
        return self.memory_proj(memory)

    def forward(self, query: Tensor, memory: Tensor, keys: Tensor) -> tuple[Tensor, Tensor]:
        """As :meth:`AdditiveAttention.forward`: context ``(B*K, D)`` and alpha ``(B*K, P)``."""
        b, n = keys.shape[0], query.shape[0]
        q = self.query_proj(query).view(b, n // b, -1)  # (B, K, A)
        e = torch.bmm(q, keys.transpose(1, 2)) * self.scale  # (B, K, P)
        alpha = e.float().softmax(-1)  # (B, K, P)
        context = torch.bmm(alpha.to(memory.dtype), memory)  # (B, K, D)
        return context.view(n, -1), alpha.view(n, -1)


ATTENTIONS: dict[str, type[nn.Module]] = {"additive": AdditiveAttention, "dot": DotProductAttention}


class GridEncoder(nn.Module):
    """The trainable top of the encoder, over the cached feature grid.

    With ``stride`` 2, a 3x3 stride-2 convolution (and a ReLU) first maps the
    ``(side, side, C)`` map to ``(side/2, side/2, C)``: a learned pooling that
    keeps what the cached map's finer cells say about small shapes, which an
    average over 2x2 cells blurs. Then ``grid_layers`` residual blocks
    ``a + conv3x3(relu(conv3x3(a)))`` and an optional learned position
    embedding (zero-initialised, so training starts from the plain grid), then
    ``self_attention`` pre-norm transformer layers over the positions. The
    cached CNN is frozen; this is the part of the encoder the caption loss
    tunes, as fine-tuning the last CNN block would, at a fraction of the cost.
    """

    def __init__(self, *, feature_dim: int, num_positions: int, layers: int, position_embedding: bool,
                 stride: int = 1, self_attention: int = 0) -> None:
        super().__init__()
        self.side = math.isqrt(num_positions)
        self.reduce = (nn.Sequential(nn.Conv2d(feature_dim, feature_dim, 3, stride=2, padding=1), nn.ReLU())
                       if stride == 2 else None)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(feature_dim, feature_dim, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(feature_dim, feature_dim, 3, padding=1))
            for _ in range(layers)
        )
        out_positions = num_positions // stride ** 2
        self.position = nn.Parameter(torch.zeros(out_positions, feature_dim)) if position_embedding else None
        self.mixers = nn.ModuleList(
            nn.TransformerEncoderLayer(feature_dim, nhead=4, dim_feedforward=2 * feature_dim, dropout=0.0,
                                       batch_first=True, norm_first=True)
            for _ in range(self_attention)
        )

    def forward(self, grid: Tensor) -> Tensor:
        """``(B, P, C) -> (B, P / stride², C)``."""
        if self.blocks or self.reduce is not None:
            b, p, c = grid.shape
            x = grid.transpose(1, 2).reshape(b, c, self.side, self.side)  # (B, C, S, S)
            if self.reduce is not None:
                x = self.reduce(x)  # (B, C, S/2, S/2)
            for block in self.blocks:
                x = x + block(x)
            grid = x.flatten(2).transpose(1, 2)  # (B, P', C)
        if self.position is not None:
            grid = grid + self.position
        if self.mixers:
            # float32 under CPU autocast: the layer's bf16 attention and backward ran 4x slower than
            # float32 on the project's AMX CPU (62 against 16 ms for a batch of 32 x 144 x 64, fwd +
            # bwd); CUDA autocast is a different context and keeps bf16 there
            with torch.autocast("cpu", enabled=False):
                grid = grid.float()
                for mixer in self.mixers:
                    grid = mixer(grid)
        return grid


class ShowAttendTell(CaptionModel):
    """Show, Attend and Tell with soft attention (Xu et al. 2015).

    * Annotation vectors: the cached grid through :class:`GridEncoder`
      (identity unless ``grid_layers`` or ``position_embedding`` are set).
    * Initial state (sec. 3.1.2): ``h_0, c_0 = tanh(f_init(mean_i a_i))``, one
      linear map per state tensor and layer.
    * Context (sec. 4.2.1): ``z_t = beta_t * sum_i alpha_ti a_i`` with the scalar
      gate ``beta_t = sigmoid(f_beta(h_{t-1}))``; attention and gate read the top
      layer of ``h_{t-1}``.
    * Input of the recurrent core: ``[E y_{t-1}; z_t]``.
    * Deep output (eq. 7): ``p(y_t) = softmax(L_o(E y_{t-1} + L_h h_t + L_z z_t))``.

    The doubly stochastic attention penalty (eq. 14) lives in
    :func:`components.captioning.losses.doubly_stochastic_penalty`.
    """

    num_static_state = 2  # (values (B, P, D), keys (B, P, A)), see _values
    uses_attention = True

    def __init__(self, cfg: CaptionerConfig) -> None:
        super().__init__(cfg)
        self.encoder = GridEncoder(feature_dim=cfg.feature_dim, num_positions=cfg.num_positions,
                                   layers=cfg.grid_layers, position_embedding=cfg.position_embedding,
                                   stride=cfg.grid_stride, self_attention=cfg.grid_self_attention)
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed_dim, padding_idx=Vocab.pad_id)
        self.attention = ATTENTIONS[cfg.attention](feature_dim=cfg.feature_dim, hidden_dim=cfg.hidden_dim,
                                                   attention_dim=cfg.attention_dim)
        self.f_beta = nn.Linear(cfg.hidden_dim, 1)
        core_cls = CELLS[cfg.cell]
        self.core = core_cls(input_dim=cfg.embed_dim + cfg.feature_dim, hidden_dim=cfg.hidden_dim,
                             num_layers=cfg.num_layers, dropout=cfg.dropout)
        self.f_init = nn.ModuleList(
            nn.Linear(cfg.feature_dim, cfg.num_layers * cfg.hidden_dim) for _ in core_cls.state_names
        )
        self.dropout = nn.Dropout(cfg.dropout)
        self.out_h = nn.Linear(cfg.hidden_dim, cfg.embed_dim)  # L_h
        self.out_z = nn.Linear(cfg.feature_dim, cfg.embed_dim)  # L_z
        self.out = nn.Linear(cfg.embed_dim, cfg.vocab_size)  # L_o
        self.project_values = cfg.memory_positions < cfg.feature_dim  # see _values

    def _encode(self, grid: Tensor | None, pooled: Tensor) -> tuple[tuple[Tensor, ...], Tensor, Tensor]:
        """The initial recurrent state (``(B, L, H)`` each), the annotation vectors ``(B, P, C)`` and
        their attention keys ``(B, P, A)``."""
        cfg = self.config
        if grid is None:
            raise ValueError("show_attend_tell needs the feature grid")
        self._check_features("grid", grid, (cfg.num_positions, cfg.feature_dim))
        grid = self.encoder(grid)  # (B, P, C)
        mean = grid.mean(1)  # (B, C)
        recurrent = tuple(
            torch.tanh(f(mean)).view(-1, cfg.num_layers, cfg.hidden_dim) for f in self.f_init
        )  # (B, L, H) each
        return recurrent, grid, self.attention.project_memory(grid)

    def init_state(self, grid: Tensor | None, pooled: Tensor) -> State:
        recurrent, memory, keys = self._encode(grid, pooled)
        return (*recurrent, self._values(memory), keys)

    def _values(self, memory: Tensor) -> Tensor:
        """What a decoding step mixes with the attention weights: the annotation vectors ``(B, P, C)``
        or, on a grid of fewer positions than channels, their images ``(B, P, G + E)`` under the two
        linear maps the context goes through (``W_z`` of layer 0's input gates, then ``L_z``).

        The weights of an average commute with a linear map (``W sum_i alpha_i a_i = sum_i alpha_i W
        a_i``), so mapping the ``P`` vectors once per image replaces two matrix products over ``C``
        inputs per beam and step with a mix of ``P`` rows: the same maths, up to float rounding.
        """
        if not self.project_values:
            return memory
        return F.linear(memory, torch.cat([self._context_gate_weight(), self.out_z.weight]))

    def _attend(self, h_prev: Tensor, memory: Tensor, keys: Tensor) -> tuple[Tensor, Tensor]:
        """The gated context ``z_t`` ``(B, D)`` and ``alpha_t`` ``(B, P)`` from the top layer of ``h_{t-1}``
        (``memory``: the annotation vectors or :meth:`_values`)."""
        context, alpha = self.attention(h_prev, memory, keys)  # (B, D), (B, P)
        return torch.sigmoid(self.f_beta(h_prev)) * context, alpha  # beta_t gate (B, 1)

    def _context_gate_weight(self) -> Tensor:
        """``W_z``, the context's part of layer 0's input weights ``(G, C)``."""
        return self.core.rnn.weight_ih_l0[:, self.config.embed_dim:]

    def _core_inputs(self, emb: Tensor) -> tuple[Tensor, Tensor]:
        """Layer 0's input weights split into the word part (applied to ``emb`` ``(..., E)``, with
        the bias) and the context part: ``W [E y; z] + b = (W_E E y + b) + W_z z``."""
        weight = self.core.rnn.weight_ih_l0[:, : self.config.embed_dim]
        return F.linear(self.dropout(emb), weight, self.core.rnn.bias_ih_l0), self._context_gate_weight()

    def _word_gates(self, tokens: Tensor, emb: Tensor) -> Tensor:
        """``W_E E y + b`` ``(N, G)`` of the words ``tokens`` ``(N,)`` (embedded: ``emb``).

        Beam search steps more rows than the vocabulary has words (``B*K`` against ``V``); out of
        training (dropout acts on each row's embedding there) it is less work to map every word once
        and pick the rows, with the same numbers.
        """
        if self.training or tokens.shape[0] <= self.config.vocab_size:
            return self._core_inputs(emb)[0]
        return self._core_inputs(self.embed.weight)[0].index_select(0, tokens)

    def _logits(self, emb: Tensor, h: Tensor, z_out: Tensor) -> Tensor:
        """Xu eq. 7 from the context's term ``z_out = L_z z``."""
        return self.out(self.dropout(emb + self.out_h(h) + z_out))

    def step_logits(self, tokens: Tensor, state: State) -> tuple[Tensor, State, Tensor]:
        *recurrent, values, keys = state
        layers = self.core.split_state(tuple(recurrent))
        z, alpha = self._attend(layers[-1][0], values, keys)
        if self.project_values:  # z holds W_z z and L_z z already (_values)
            z_gates, z_out = z.split([z.shape[1] - self.config.embed_dim, self.config.embed_dim], 1)
            z_out = z_out + self.out_z.bias
        else:
            z_gates, z_out = F.linear(z, self._context_gate_weight()), self.out_z(z)
        emb = self.embed(tokens)  # (N, E)
        layers = self.core.step_layers(self._word_gates(tokens, emb) + z_gates, layers)
        return self._logits(emb, layers[-1][0], z_out), (*self.core.join_state(layers), values, keys), alpha

    def _teacher_forced(self, grid: Tensor | None, pooled: Tensor, tokens: Tensor) -> CaptionOutput:
        """:meth:`step_logits` over the whole caption, with what does not depend on the recurrence taken
        out of the loop: the word embeddings and their share of the input gates before it, the deep
        output layer (three linears over ``(B, T-1, .)``) after it. Same maths and weights; the
        annotation vectors as they are: one row per image for a few steps gains nothing from _values.

        Step ``t`` runs only the captions that still have a target there. A batch is as long as its
        longest caption (here 6 to 19 tokens, mean 12.7: nearly every batch of 32 is 19 wide), so
        stepping every row would spend a third of the attention and the cell on padding. The rows
        go in order of length, longest first, so the captions still running at step ``t`` are the
        first ``n_t`` rows and each step slices its state (Xu et al.'s "decode lengths" trick). What
        a padded step would have computed never reaches the loss, which masks padded targets: the
        logits and gradients of every real target are the same, up to float rounding, as stepping
        every row. Dropout on the words and the output draws in the batch's own order, as before;
        between stacked layers (``num_layers`` > 1) it draws per running row. At padded steps the
        logits are those of a zero state and context and the attention weights are zeros.
        """
        recurrent, memory, keys = self._encode(grid, pooled)
        emb = self.embed(tokens[:, :-1])  # (B, T-1, E)
        word_gates, w_z = self._core_inputs(emb)  # (B, T-1, G)
        b, steps = word_gates.shape[:2]
        lengths = (tokens[:, 1:] != Vocab.pad_id).sum(1)  # (B,) targets per caption
        order = lengths.argsort(descending=True, stable=True)  # longest first
        running = (lengths[None, :] > torch.arange(steps, device=lengths.device)[:, None]).sum(1).tolist()
        layers = self.core.split_state(tuple(s.index_select(0, order) for s in recurrent))
        memory, keys, word_gates = (x.index_select(0, order) for x in (memory, keys, word_gates))
        hs, zs, alphas = [], [], []
        for t, n in enumerate(running):
            if n == 0:  # columns of padding only: nothing more to run
                break
            layers = [tuple(s[:n] for s in layer) for layer in layers]
            z, alpha = self._attend(layers[-1][0], memory[:n], keys[:n])
            layers = self.core.step_layers(word_gates[:n, t] + F.linear(z, w_z), layers)
            hs.append(layers[-1][0])
            zs.append(z)
            alphas.append(alpha)
        unsort = torch.empty_like(order)
        unsort[order] = torch.arange(b, device=order.device)

        def full(parts: list[Tensor]) -> Tensor:  # (B, T-1, .) in the batch's order, zeros where padded
            padded = [F.pad(x, (0, 0, 0, b - x.shape[0])) for x in parts]
            padded += [padded[0].new_zeros(padded[0].shape)] * (steps - len(padded))
            return torch.stack(padded, 1).index_select(0, unsort)

        logits = self._logits(emb, full(hs), self.out_z(full(zs)))  # (B, T-1, V)
        return CaptionOutput(logits, full(alphas))


MODELS: dict[str, type[CaptionModel]] = {"show_tell": ShowTell, "show_attend_tell": ShowAttendTell}


def build_model(cfg: CaptionerConfig) -> CaptionModel:
    """A freshly initialised model of ``cfg.architecture`` (see :data:`MODELS`)."""
    return MODELS[cfg.architecture](cfg)


__all__ = [
    "ATTENTIONS", "CELLS", "MODELS", "AdditiveAttention", "DotProductAttention", "CaptionModel", "CaptionerConfig", "CaptionOutput",
    "GRUCore", "LSTMCore", "RecurrentCore", "ShowAttendTell", "ShowTell", "State", "build_model",
]
