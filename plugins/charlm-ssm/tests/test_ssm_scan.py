"""The chunked SSD scan against a plain step-by-step recurrence (the definition), in float64."""

import pytest
import torch
import torch.nn.functional as F

from charlm_ssm.ssd import segsum, ssd_chunked, ssd_step


def reference(x, dt, A, B, C, state):
    """state_t = exp(dt_t A) state_{t-1} + dt_t x_t B_t^T ; y_t = state_t C_t, one step at a time."""
    ys = []
    for t in range(x.shape[1]):
        decay = torch.exp(dt[:, t] * A)[..., None, None]
        state = decay * state + (dt[:, t, :, None] * x[:, t])[..., None] * B[:, t, None, None, :]
        ys.append(torch.einsum("bhpn,bn->bhp", state, C[:, t]))
    return torch.stack(ys, dim=1), state


def inputs(b=2, T=150, H=3, P=4, N=5, dtype=torch.float64, seed=0, dt_scale=1.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, T, H, P, generator=g, dtype=dtype)
    dt = F.softplus(torch.randn(b, T, H, generator=g, dtype=dtype)) * dt_scale
    A = -torch.empty(H, dtype=dtype).uniform_(1, 16, generator=g)
    B = torch.randn(b, T, N, generator=g, dtype=dtype)
    C = torch.randn(b, T, N, generator=g, dtype=dtype)
    state = torch.randn(b, H, P, N, generator=g, dtype=dtype)
    return x, dt, A, B, C, state


def rel_err(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def test_segsum_is_the_sum_between_positions():
    a = torch.randn(6, dtype=torch.float64)
    s = segsum(a)
    for i in range(6):
        for j in range(6):
            expected = a[j + 1 : i + 1].sum() if j <= i else float("-inf")
            assert s[i, j].item() == pytest.approx(float(expected))


@pytest.mark.parametrize("T", [1, 63, 64, 150])
def test_chunked_matches_the_recurrence_in_float64(T):
    x, dt, A, B, C, state = inputs(T=T)
    y_ref, s_ref = reference(x, dt, A, B, C, state)
    y, s = ssd_chunked(x, dt, A, B, C, chunk_size=64, state=state)
    assert y.dtype == s.dtype == torch.float64
    assert rel_err(y, y_ref) < 1e-12 and rel_err(s, s_ref) < 1e-12


def test_chunked_in_float32_is_within_1e5_of_float64():
    x, dt, A, B, C, state = inputs(T=300, dt_scale=0.1)  # mild decay: a long memory to get right
    y_ref, s_ref = reference(x, dt, A, B, C, state)
    y, s = ssd_chunked(*(t.float() for t in (x, dt, A, B, C)), chunk_size=64, state=state.float())
    assert y.dtype == torch.float32
    assert rel_err(y, y_ref) < 1e-5 and rel_err(s, s_ref) < 1e-5


def test_bfloat16_inputs_are_scanned_in_float32():
    x, dt, A, B, C, state = (t.to(torch.bfloat16) for t in inputs(T=300, dt_scale=0.1))
    y_ref, s_ref = reference(*(t.double() for t in (x, dt, A, B, C, state)))
    y, s = ssd_chunked(x, dt, A, B, C, chunk_size=64, state=state)
    assert y.dtype == s.dtype == torch.float32
    assert rel_err(y, y_ref) < 1e-5 and rel_err(s, s_ref) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_strong_decay_over_a_long_sequence_stays_finite(dtype):
    # dt up to ~30 and A down to -16: log decays of -500 per step, -30000 per chunk
    x, dt, A, B, C, state = inputs(b=1, T=1024, H=2, dt_scale=10.0, seed=1)
    y_ref, _ = reference(x, dt, A, B, C, state)
    y, s = ssd_chunked(*(t.to(dtype) for t in (x, dt, A, B, C)), chunk_size=64, state=state.to(dtype))
    assert torch.isfinite(y).all() and torch.isfinite(s).all()
    assert rel_err(y, y_ref) < (1e-5 if dtype == torch.float32 else 3e-2)


def test_chunk_size_does_not_change_the_result():
    x, dt, A, B, C, state = inputs(T=130)
    y64, s64 = ssd_chunked(x, dt, A, B, C, chunk_size=64, state=state)
    for q in (1, 7, 32, 200):
        y, s = ssd_chunked(x, dt, A, B, C, chunk_size=q, state=state)
        assert rel_err(y, y64) < 1e-12 and rel_err(s, s64) < 1e-12


def test_step_matches_the_recurrence():
    x, dt, A, B, C, state = inputs(T=5)
    y_ref, s_ref = reference(x, dt, A, B, C, state)
    s = state
    for t in range(5):
        y, s = ssd_step(x[:, t], dt[:, t], A, B[:, t], C[:, t], s)
        assert rel_err(y, y_ref[:, t]) < 1e-12
    assert rel_err(s, s_ref) < 1e-12


def test_gradients_match_the_recurrence():
    args = [t.requires_grad_() for t in inputs(b=1, T=20, H=2, P=3, N=4)]
    y_ref, s_ref = reference(*args)
    weights = torch.randn_like(y_ref), torch.randn_like(s_ref)
    grads_ref = torch.autograd.grad((y_ref * weights[0]).sum() + (s_ref * weights[1]).sum(), args)
    y, s = ssd_chunked(*args[:5], chunk_size=8, state=args[5])
    grads = torch.autograd.grad((y * weights[0]).sum() + (s * weights[1]).sum(), args)
    for name, g, g_ref in zip(["x", "dt", "A", "B", "C", "state"], grads, grads_ref):
        assert rel_err(g, g_ref) < 1e-10, name
