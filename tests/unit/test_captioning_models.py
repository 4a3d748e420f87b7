"""Caption models: shapes, attention, step/forward agreement, scheduled sampling, config."""

from __future__ import annotations

import itertools
from typing import get_args

import pytest
import torch

from components.captioning.config import Architecture, AttentionKind, Cell
from components.captioning.models import (
    ATTENTIONS, CELLS, MODELS, DotProductAttention, CaptionerConfig, CaptionOutput, GRUCore, LSTMCore, ShowAttendTell, ShowTell, build_model,
)
from components.config import ConfigError


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one intra-op thread is faster and immune to OpenMP oversubscription."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


B, P, C, V, T = 3, 4, 8, 11, 6
COMBOS = list(itertools.product(MODELS, CELLS))


def make_cfg(architecture: str = "show_attend_tell", cell: str = "lstm", **kw) -> CaptionerConfig:
    base = dict(architecture=architecture, cell=cell, vocab_size=V, feature_dim=C, num_positions=P,
                embed_dim=6, hidden_dim=10, num_layers=2, dropout=0.2, attention_dim=5,
                grid_layers=0, position_embedding=False)
    return CaptionerConfig(**{**base, **kw})


def inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    grid = torch.randn(B, P, C, generator=g)
    tokens = torch.randint(4, V, (B, T), generator=g)
    tokens[:, 0] = 1
    tokens[0, 3], tokens[0, 4:] = 2, 0  # a padded caption
    tokens[1:, -1] = 2
    return grid, grid.mean(1), tokens


def test_registries_and_build():
    assert set(MODELS) == {"show_tell", "show_attend_tell"} and set(CELLS) == {"lstm", "gru"}
    assert isinstance(build_model(make_cfg("show_tell", "gru")), ShowTell)
    model = build_model(make_cfg("show_attend_tell", "gru"))
    assert isinstance(model, ShowAttendTell) and isinstance(model.core, GRUCore)
    assert isinstance(build_model(make_cfg("show_tell", "lstm")).core, LSTMCore)


@pytest.mark.parametrize("arch,cell", COMBOS)
def test_output_and_step_shapes(arch, cell):
    torch.manual_seed(0)
    model = build_model(make_cfg(arch, cell))
    grid, pooled, tokens = inputs()
    out = model(grid, pooled, tokens)
    assert isinstance(out, CaptionOutput)
    assert out.logits.shape == (B, T - 1, V)
    state = model.init_state(grid, pooled)
    assert all(s.shape[0] == B for s in state)
    n_recurrent = len(state) - model.num_static_state
    assert n_recurrent == len(CELLS[cell].state_names)
    assert all(s.shape == (B, 2, 10) for s in state[:n_recurrent])  # (B, layers, H)
    log_probs, new_state, alpha = model.step(tokens[:, 0], state)
    assert log_probs.shape == (B, V) and log_probs.dtype == torch.float32
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(B))
    assert len(new_state) == len(state)
    if arch == "show_attend_tell":
        assert out.alphas.shape == (B, T - 1, P) and alpha.shape == (B, P)
    else:
        assert out.alphas is None and alpha is None
    out.logits.sum().backward()  # every parameter takes part (DDP without find_unused_parameters)
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("cell", CELLS)
def test_attention_weights_sum_to_one(cell, attention):
    torch.manual_seed(1)
    model = build_model(make_cfg("show_attend_tell", cell, attention=attention))
    grid, pooled, tokens = inputs()
    alphas = model(grid, pooled, tokens).alphas
    assert (alphas >= 0).all()
    real = (tokens[:, 1:] != 0).float()  # steps with a target; at padded ones the weights are zeros
    torch.testing.assert_close(alphas.sum(-1), real)


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("arch,cell", COMBOS)
def test_forward_equals_stepwise_decoding_interface(arch, cell, attention):
    """The training pass and the step interface are the same function (eval mode), at every step
    with a target (what the training pass computes at padded steps is not used)."""
    torch.manual_seed(2)
    model = build_model(make_cfg(arch, cell, attention=attention)).eval()
    grid, pooled, tokens = inputs(3)
    out = model(grid, pooled, tokens)
    real = tokens[:, 1:] != 0
    state = model.init_state(grid, pooled)
    for t in range(T - 1):
        log_probs, state, alpha = model.step(tokens[:, t], state)
        rows = real[:, t]
        torch.testing.assert_close(log_probs[rows], out.logits[rows, t].log_softmax(-1), rtol=1e-5, atol=1e-5)
        if alpha is not None:
            torch.testing.assert_close(alpha[rows], out.alphas[rows, t])


def _every_row_pass(model: ShowAttendTell, grid: torch.Tensor, tokens: torch.Tensor) -> CaptionOutput:
    """The training pass that steps every row at every step, padding included (the one before
    padded steps were skipped): the reference of the test below."""
    recurrent, memory, keys = model._encode(grid, grid.mean(1))
    layers = model.core.split_state(tuple(recurrent))
    emb = model.embed(tokens[:, :-1])
    word_gates, w_z = model._core_inputs(emb)
    hs, zs, alphas = [], [], []
    for t in range(emb.shape[1]):
        z, alpha = model._attend(layers[-1][0], memory, keys)
        layers = model.core.step_layers(word_gates[:, t] + torch.nn.functional.linear(z, w_z), layers)
        hs.append(layers[-1][0])
        zs.append(z)
        alphas.append(alpha)
    logits = model._logits(emb, torch.stack(hs, 1), model.out_z(torch.stack(zs, 1)))
    return CaptionOutput(logits, torch.stack(alphas, 1))


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("layers, dropout", [(1, 0.3), (2, 0.0)])
@pytest.mark.parametrize("cell", CELLS)
def test_teacher_forced_pass_skipping_padding_equals_stepping_every_row(cell, layers, dropout, attention):
    """The training pass steps only the captions still running (longest first); in training mode
    the loss (attention penalty included) and every gradient equal those of stepping every row.
    With one layer the dropout draws are the same; between two layers they are per running row,
    so that case runs without dropout."""
    from components.captioning.losses import LossConfig, caption_loss

    g = torch.Generator().manual_seed(8)
    b, t = 6, 10
    grid = torch.randn(b, P, C, generator=g)
    tokens = torch.randint(4, V, (b, t), generator=g)
    tokens[:, 0] = 1
    for row, length in enumerate([9, 3, 6, 9, 2, 5]):  # unsorted, ties, a caption of one target,
        tokens[row, length - 1], tokens[row, length:] = 2, 0  # and a last column of padding only
    cfg = LossConfig(attention_penalty=0.5)

    def loss_and_grads(skip: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        torch.manual_seed(9)
        model = build_model(make_cfg(num_layers=layers, dropout=dropout, attention=attention,
                                     grid_layers=1, position_embedding=True)).train()
        torch.manual_seed(10)  # the same dropout draws in both passes
        out = model(grid, grid.mean(1), tokens) if skip else _every_row_pass(model, grid, tokens)
        loss = caption_loss(out, tokens, cfg=cfg)["loss"]
        loss.backward()
        return loss.detach(), {n: p.grad for n, p in model.named_parameters()}

    skip_loss, skip_grads = loss_and_grads(True)
    all_loss, all_grads = loss_and_grads(False)
    torch.testing.assert_close(skip_loss, all_loss, rtol=1e-5, atol=1e-6)
    assert skip_grads.keys() == all_grads.keys()
    for name, grad in all_grads.items():
        torch.testing.assert_close(skip_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("channels", [C, P])
def test_beam_rows_sharing_memory_step_as_the_training_pass(channels, attention):
    """Beam search's layout: K rows per image, the memory once per image; with B*K above the
    vocabulary size the word gates come from a per-word table, and with P < C the step mixes the
    projected annotation vectors (_values). The log-probs still equal the teacher-forced pass."""
    torch.manual_seed(5)
    model = build_model(make_cfg(feature_dim=channels, attention=attention)).eval()
    assert model.project_values == (P < channels)
    k = 4  # B*K = 12 rows > V = 11
    grid = torch.randn(B, P, channels, generator=torch.Generator().manual_seed(6))
    tokens = torch.randint(4, V, (B * k, T), generator=torch.Generator().manual_seed(7))
    tokens[:, 0] = 1
    reference = model(grid.repeat_interleave(k, 0), grid.mean(1).repeat_interleave(k, 0), tokens)
    state = model.init_state(grid, grid.mean(1))
    n = len(state) - model.num_static_state
    state = tuple(s.repeat_interleave(k, 0) for s in state[:n]) + state[n:]
    for t in range(T - 1):
        log_probs, state, alpha = model.step(tokens[:, t], state)
        torch.testing.assert_close(log_probs, reference.logits[:, t].log_softmax(-1), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(alpha, reference.alphas[:, t])
    assert state[-1].shape[0] == B  # the memory kept one row per image


@pytest.mark.parametrize("arch", MODELS)
def test_state_reindexes_along_batch(arch):
    torch.manual_seed(3)
    model = build_model(make_cfg(arch, "lstm")).eval()
    grid, pooled, tokens = inputs()
    perm = torch.tensor([2, 0, 1])
    state = model.init_state(grid, pooled)
    permuted = tuple(s.index_select(0, perm) for s in state)
    lp, _, _ = model.step(tokens[:, 0], state)
    lp_perm, _, _ = model.step(tokens[perm, 0], permuted)
    torch.testing.assert_close(lp_perm, lp[perm])


@pytest.mark.parametrize("arch", MODELS)
def test_scheduled_sampling(arch):
    torch.manual_seed(4)
    model = build_model(make_cfg(arch, "gru", dropout=0.0))
    grid, pooled, tokens = inputs()
    teacher = model(grid, pooled, tokens)
    none = model(grid, pooled, tokens, sampling_prob=0.0)
    torch.testing.assert_close(none.logits, teacher.logits)
    own = model(grid, pooled, tokens, sampling_prob=1.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(own.logits[:, 0], teacher.logits[:, 0], rtol=1e-5, atol=1e-5)  # first input: <start>
    assert not torch.allclose(own.logits[:, 1:], teacher.logits[:, 1:])
    again = model(grid, pooled, tokens, sampling_prob=1.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(again.logits, own.logits)
    own.logits.sum().backward()
    with pytest.raises(ValueError, match="sampling_prob"):
        model(grid, pooled, tokens, sampling_prob=1.5)


def test_feature_shape_is_checked():
    model = build_model(make_cfg())
    grid, pooled, tokens = inputs()
    with pytest.raises(ValueError, match="grid"):
        model(grid[:, :2], pooled, tokens)
    with pytest.raises(ValueError, match="pooled"):
        build_model(make_cfg("show_tell"))(None, pooled[:, :3], tokens)
    assert build_model(make_cfg("show_tell"))(None, pooled, tokens).logits.shape == (B, T - 1, V)


@pytest.mark.parametrize("arch", MODELS)
def test_a_batch_with_no_target_is_refused_by_name(arch):
    model = build_model(make_cfg(arch))
    grid, pooled, tokens = inputs()
    tokens[:, 1:] = 0  # <start> then padding only
    with pytest.raises(ValueError, match="no target"):
        model(grid, pooled, tokens)
    tokens[2, 1] = 2  # one caption that is just <end>: trains
    assert model(grid, pooled, tokens).logits.shape == (B, T - 1, V)


def test_config_is_strict_and_round_trips():
    cfg = make_cfg()
    assert CaptionerConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="hiden_dim"):
        CaptionerConfig.from_dict({**cfg.to_dict(), "hiden_dim": 3})
    with pytest.raises(ConfigError, match="num_layers"):
        CaptionerConfig.from_dict({**cfg.to_dict(), "num_layers": "2"})
    with pytest.raises(ValueError, match="architecture"):
        make_cfg("transformer")
    with pytest.raises(ValueError, match="cell"):
        make_cfg(cell="rnn")
    with pytest.raises(ValueError, match="dropout"):
        make_cfg(dropout=1.0)
    with pytest.raises(TypeError):
        CaptionerConfig("show_tell", "lstm", V, C, P)  # keyword-only


def test_grid_encoder_layers_and_position_embedding():
    torch.manual_seed(0)
    cfg = make_cfg(grid_layers=2, position_embedding=True)
    model = build_model(cfg)
    grid, pooled, tokens = inputs()
    out = model(grid, pooled, tokens)
    assert out.logits.shape == (B, T - 1, V) and out.alphas.shape == (B, T - 1, P)
    # the conv blocks and the position table are trained parameters
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "encoder.position" in names and "encoder.blocks.1.2.weight" in names
    out.logits.sum().backward()
    assert model.encoder.position.grad.abs().sum() > 0

    # same features everywhere: only the position embedding can tell positions apart
    flat = torch.ones(1, P, C)
    plain = build_model(make_cfg())
    full = tokens[1:2]  # a caption without padding: every step attends
    assert torch.allclose(plain(flat, flat.mean(1), full).alphas, torch.full((1, T - 1, P), 1 / P))
    positional = build_model(make_cfg(position_embedding=True))
    with torch.no_grad():
        positional.encoder.position.copy_(torch.randn(P, C))
    assert positional(flat, flat.mean(1), full).alphas.std() > 1e-3


def test_grid_encoder_config_checks_and_every_key_is_required():
    with pytest.raises(ValueError, match="square"):
        make_cfg(num_positions=6, grid_layers=1)
    with pytest.raises(ValueError, match="grid_layers"):
        make_cfg(grid_layers=-1)
    partial = {k: v for k, v in make_cfg().to_dict().items() if k != "position_embedding"}
    with pytest.raises(ConfigError, match="missing key 'position_embedding'"):
        CaptionerConfig.from_dict(partial)


def test_grid_stride_attends_a_quarter_of_the_positions_through_a_learned_conv():
    """grid_stride 2: a 3x3 stride-2 conv maps the 4x4 cached grid to 2x2 positions before the blocks; the
    decoder attends over those 4, the conv is trained, and an old config without the key means stride 1."""
    torch.manual_seed(0)
    cfg = make_cfg(num_positions=16, grid_layers=1, position_embedding=True, grid_stride=2)
    assert cfg.memory_positions == 4
    model = build_model(cfg)
    g = torch.Generator().manual_seed(1)
    grid = torch.randn(B, 16, C, generator=g)
    _, _, tokens = inputs()
    out = model(grid, grid.mean(1), tokens)
    assert out.logits.shape == (B, T - 1, V) and out.alphas.shape == (B, T - 1, 4)
    assert model.encoder.position.shape == (4, C)
    # the encoder is conv(stride 2) + ReLU, then the block, then the positions
    enc = model.encoder
    x = grid.transpose(1, 2).reshape(B, C, 4, 4)
    x = torch.relu(torch.nn.functional.conv2d(x, enc.reduce[0].weight, enc.reduce[0].bias, stride=2, padding=1))
    x = x + enc.blocks[0](x)
    assert torch.allclose(enc(grid), x.flatten(2).transpose(1, 2) + enc.position, atol=1e-6)
    out.logits.sum().backward()
    assert enc.reduce[0].weight.grad.abs().sum() > 0
    # a finer cached map reaches the decoder: changing one cached cell changes the memory of its 2x2 block
    moved = grid.clone()
    moved[:, 5] += 1.0
    assert not torch.allclose(enc(moved), enc(grid))
    # the key is optional in config.json (folders written before it: stride 1) and checked
    old = {k: v for k, v in make_cfg().to_dict().items() if k != "grid_stride"}
    assert CaptionerConfig.from_dict(old).grid_stride == 1
    with pytest.raises(ConfigError, match="grid_stride must be 1 or 2"):
        make_cfg(grid_stride=3)
    with pytest.raises(ConfigError, match="even side"):
        make_cfg(num_positions=9, grid_stride=2)


def test_grid_self_attention_lets_every_position_read_the_others():
    """grid_self_attention 1: a change at one position reaches the annotation vectors of every other one
    (without it, a 3x3 block reaches only the neighbours); trained, under bf16 autocast too; checked."""
    torch.manual_seed(0)
    grid = torch.randn(B, 16, C)
    moved = grid.clone()
    moved[:, 0] += 1.0  # the top-left corner
    far = 15  # the bottom-right corner, out of reach of one 3x3 block
    local = build_model(make_cfg(num_positions=16, grid_layers=1, position_embedding=True)).encoder
    assert torch.allclose(local(moved)[:, far], local(grid)[:, far])
    model = build_model(make_cfg(num_positions=16, grid_layers=1, position_embedding=True, grid_self_attention=1))
    mixed = model.encoder
    assert not torch.allclose(mixed(moved)[:, far], mixed(grid)[:, far])
    _, _, tokens = inputs()
    out = model(grid, grid.mean(1), tokens)
    assert out.alphas.shape == (B, T - 1, 16)
    out.logits.sum().backward()
    assert mixed.mixers[0].self_attn.in_proj_weight.grad.abs().sum() > 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.isfinite(model(grid, grid.mean(1), tokens).logits.float()).all()
    old = {k: v for k, v in make_cfg().to_dict().items() if k != "grid_self_attention"}
    assert CaptionerConfig.from_dict(old).grid_self_attention == 0
    with pytest.raises(ConfigError, match="grid_self_attention must be >= 0"):
        make_cfg(grid_self_attention=-1)
    with pytest.raises(ConfigError, match="divisible by its 4 heads"):
        make_cfg(feature_dim=6, grid_self_attention=1)


def test_config_names_are_the_registry_keys():
    """config.py states the names (it imports no model code); the registries must have exactly them."""
    assert sorted(get_args(Architecture)) == sorted(MODELS)
    assert sorted(get_args(Cell)) == sorted(CELLS)
    assert sorted(get_args(AttentionKind)) == sorted(ATTENTIONS)


def test_dot_attention_scores_projected_query_against_keys():
    """attention: dot: alpha = softmax((W_h h) . (W_a a_i) / sqrt(A)), and K queries per image (beams) read
    their own image's keys; a model config saved before the key existed loads as additive."""
    torch.manual_seed(8)
    att = DotProductAttention(feature_dim=C, hidden_dim=10, attention_dim=5)
    memory, query = torch.randn(B, P, C), torch.randn(B * 2, 10)
    keys = att.project_memory(memory)
    context, alpha = att(query, memory, keys)
    image = torch.arange(B).repeat_interleave(2)  # rows 2b, 2b+1 read image b
    q = att.query_proj(query)
    expected = (torch.einsum("na,npa->np", q, keys[image]) / 5 ** 0.5).softmax(-1)
    torch.testing.assert_close(alpha, expected)
    torch.testing.assert_close(context, torch.einsum("np,npc->nc", expected, memory[image]))
    model = build_model(make_cfg(attention="dot"))
    assert isinstance(model.attention, DotProductAttention) and not hasattr(model.attention, "score")
    old = {k: v for k, v in make_cfg().to_dict().items() if k != "attention"}
    assert CaptionerConfig.from_dict(old).attention == "additive"
    with pytest.raises(ConfigError, match="attention"):
        make_cfg(attention="multiplicative")


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("layers", [1, 2])
def test_functional_cell_steps_equal_the_fused_rnn(cell, layers):
    # the attention decoder steps the stack with RecurrentCore.step_layers (its own maths over
    # nn.LSTM / nn.GRU's weights); it must equal the fused kernel over the same sequence
    torch.manual_seed(0)
    core = CELLS[cell](input_dim=6, hidden_dim=5, num_layers=layers, dropout=0.2).eval()
    x = torch.randn(3, 4, 6)  # (B, T, I)
    state = tuple(torch.randn(3, layers, 5) for _ in core.state_names)
    want, want_state = core(x, state)
    per_layer = core.split_state(state)
    outs = []
    for t in range(x.shape[1]):
        per_layer = core.step_layers(core.input_gates(x[:, t]), per_layer)
        outs.append(per_layer[-1][0])
    torch.testing.assert_close(torch.stack(outs, 1), want)
    for got, ref in zip(core.join_state(per_layer), want_state):
        torch.testing.assert_close(got, ref)
