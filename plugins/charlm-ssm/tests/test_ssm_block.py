"""The ``ssm`` block as the model sees it: built through the registry, stateful decode, init."""

import math

import pytest
import torch

from charlm.config import ModelConfig, structure_attrs
from charlm.registry import get_registry


def make_block(d_model=64, seed=0, zero_init=False, **options):
    raw = {"d_model": d_model, "n_layer": 2, "zero_init_projections": zero_init, "block": {"kind": "ssm", **options}}
    model = structure_attrs(raw, ModelConfig, "model")
    torch.manual_seed(seed)
    return get_registry().create("block", model.block, model=model, layer_index=0, positional=None, max_len=256)


def rel_err(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def run_in_pieces(block, x, pieces):
    """Feed x through the block piece by piece from a fresh state; return outputs and final state."""
    state = block.init_state(x.shape[0], x.shape[1], x.device, x.dtype)
    ys, pos = [], 0
    for n in pieces:
        y, state = block(x[:, pos : pos + n], pos, state)
        ys.append(y)
        pos += n
    assert pos == x.shape[1]
    return torch.cat(ys, dim=1), state


def test_prefill_then_decode_equals_the_full_forward():
    block = make_block(chunk_size=16)
    x = torch.randn(2, 150, 64)
    with torch.no_grad():
        y_full, _ = block(x, 0, None)
        # a prefill, single bytes, a chunk of several bytes from a non-empty state, a long rest
        y, state = run_in_pieces(block, x, [70] + [1] * 10 + [5, 1, 64])
        _, state_once = run_in_pieces(block, x, [150])
    assert rel_err(y, y_full) < 1e-5
    for s, s_once in zip(state, state_once):
        assert rel_err(s, s_once) < 1e-5


def test_the_state_does_not_grow_with_the_sequence():
    block = make_block()
    assert block.max_context is None
    x = torch.randn(1, 100, 64)
    with torch.no_grad():
        _, one = run_in_pieces(block, x[:, :1], [1])
        _, many = run_in_pieces(block, x, [50] + [1] * 50)
    assert [s.shape for s in one] == [s.shape for s in many]


def test_chunk_size_does_not_change_the_block():
    a, b = make_block(chunk_size=64), make_block(chunk_size=5)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 100, 64)
    with torch.no_grad():
        assert rel_err(b(x, 0, None)[0], a(x, 0, None)[0]) < 1e-5


def test_outputs_do_not_depend_on_later_bytes():
    block = make_block()
    x = torch.randn(1, 80, 64)
    x2 = x.clone()
    x2[:, 40:] = torch.randn(1, 40, 64)
    with torch.no_grad():
        y, y2 = block(x, 0, None)[0], block(x2, 0, None)[0]
    assert torch.equal(y[:, :40], y2[:, :40])
    assert not torch.allclose(y[:, 40:], y2[:, 40:])


def test_bfloat16_block_tracks_float32():
    block = make_block()
    x = torch.randn(2, 200, 64)
    with torch.no_grad():
        y32 = block(x, 0, None)[0]
        y16 = block.to(torch.bfloat16)(x.to(torch.bfloat16), 0, None)[0]
    assert y16.dtype == torch.bfloat16 and torch.isfinite(y16).all()
    assert rel_err(y16, y32) < 5e-2


def test_mamba_initialisation():
    block = make_block(d_model=128, head_dim=16, dt_min=0.002, dt_max=0.05)
    dt = torch.nn.functional.softplus(block.dt_bias)
    assert block.dt_bias.shape == (16,)
    assert dt.min() >= 0.002 * (1 - 1e-4) and dt.max() <= 0.05 * (1 + 1e-4)
    A = -torch.exp(block.A_log)
    assert A.min() >= -16 and A.max() <= -1
    assert torch.equal(block.D, torch.ones(16))
    assert block.out_proj.weight.std().item() == pytest.approx(0.02 / math.sqrt(4), rel=0.1)


def test_no_weight_decay_names_the_ssm_parameters():
    block = make_block()
    params = dict(block.named_parameters())
    assert block.no_weight_decay() >= {"A_log", "D", "dt_bias"}
    assert block.no_weight_decay() <= set(params)
