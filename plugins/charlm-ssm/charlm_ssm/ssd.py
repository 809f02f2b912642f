"""The state-space-duality (SSD) scan of Mamba-2: chunked for training and prefill, recurrent for decode.

For one head with scalar decay a_t = exp(dt_t * A) in (0, 1], the recurrence is

    state_t = a_t * state_{t-1} + dt_t * x_t B_t^T        # [head_dim, d_state]
    y_t     = state_t C_t

Unrolled, y_i = sum_{j<=i} (C_i . B_j) * exp(dt_{j+1} A + ... + dt_i A) * dt_j x_j: attention
with a decay mask. The chunked form computes that as matrix products inside chunks of Q steps
and carries only the chunk-final states across chunks, so a sequence is O(T Q) work with no
per-step loop. All of it runs in float32 at least (float64 stays float64): decays multiply
across many steps and the state sums many terms, which bfloat16 cannot hold.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def segsum(a: torch.Tensor) -> torch.Tensor:
    """``out[..., i, j] = a[..., j+1] + ... + a[..., i]`` for j <= i, and -inf above the diagonal.

    Summing masked copies, rather than subtracting two cumulative sums, keeps each entry
    exact however large the running sum grows; exp() of it is then the decay from j to i.
    """
    n = a.shape[-1]
    rows = a[..., :, None].expand(*a.shape, n)  # rows[..., k, j] = a[..., k]
    below = torch.ones(n, n, dtype=torch.bool, device=a.device).tril(-1)
    sums = rows.masked_fill(~below, 0.0).cumsum(-2)  # sums[..., i, j] = a[j+1..i]
    causal = torch.ones(n, n, dtype=torch.bool, device=a.device).tril()
    return sums.masked_fill(~causal, float("-inf"))


def ssd_chunked(x, dt, A, B, C, chunk_size: int, state: torch.Tensor | None = None):
    """The whole sequence at once.

    x [b, T, H, P], dt [b, T, H] (positive), A [H] (negative), B and C [b, T, N] (shared by
    all heads), state [b, H, P, N] or None (zeros). Returns y [b, T, H, P] and the state after
    the last step, in float32 (float64 for float64 inputs).
    """
    dtype = torch.promote_types(x.dtype, torch.float32)
    with torch.autocast(x.device.type, enabled=False):
        b, T, H, P = x.shape
        N = B.shape[-1]
        Q = min(chunk_size, T)  # a short prefill is one chunk of its own length, not padded to 64
        c = (T + Q - 1) // Q
        pad = c * Q - T  # padded steps have dt = 0: no decay and no input, so the state passes through
        x, dt, B, C = (F.pad(t.to(dtype), (0, 0) * (t.dim() - 2) + (0, pad)) for t in (x, dt, B, C))
        # heads lead, so every product below is a plain batched matmul over contiguous [Q, .] blocks
        x = x.view(b, c, Q, H, P).permute(0, 3, 1, 2, 4)  # [b, H, c, Q, P]
        dt = dt.view(b, c, Q, H).permute(0, 3, 1, 2)  # [b, H, c, Q]
        B, C = B.view(b, 1, c, Q, N), C.view(b, 1, c, Q, N)  # one B and C for all heads

        xdt = (x * dt[..., None]).contiguous()  # the discretised input
        log_a = dt * A.to(dtype)[:, None, None]  # [b, H, c, Q], <= 0
        seg = segsum(log_a)  # [b, H, c, Q, Q]: log decay from step j to step i inside a chunk

        # 1. inside each chunk: decay-masked "attention" of C over B
        scores = C @ B.transpose(-1, -2)  # [b, 1, c, Q, Q]
        y = (scores * seg.exp()) @ xdt  # [b, H, c, Q, P]

        # 2. what each chunk adds to the state at its own end
        to_end = seg[..., -1, :].exp()  # [b, H, c, Q]
        chunk_states = (xdt * to_end[..., None]).transpose(-1, -2) @ B  # [b, H, c, P, N]

        # 3. across chunks: the state entering each chunk, a (c+1)-step recurrence done as one
        #    matrix product with the same segment sums over the chunks' total decays
        if state is None:
            state = x.new_zeros(b, H, P, N)
        states = torch.cat([state.to(dtype)[:, :, None], chunk_states], dim=2)  # [b, H, c+1, P, N]
        carry = segsum(F.pad(log_a.sum(-1), (1, 0))).exp()  # [b, H, c+1, c+1]
        states = (carry @ states.flatten(3)).view(b, H, c + 1, P, N)
        entering, final = states[:, :, :-1], states[:, :, -1]

        # 4. the entering state, decayed to each step, read out by C
        from_start = log_a.cumsum(-1).exp()  # [b, H, c, Q], bounded by one chunk
        y = y + (C @ entering.transpose(-1, -2)) * from_start[..., None]
        return y.permute(0, 2, 3, 1, 4).reshape(b, c * Q, H, P)[:, :T], final


def ssd_step(x, dt, A, B, C, state: torch.Tensor):
    """One step of the recurrence: x [b, H, P], dt [b, H], A [H], B and C [b, N], state [b, H, P, N].

    O(1) in the position. Returns y [b, H, P] and the next state, in float32 (float64 for float64).
    """
    dtype = torch.promote_types(x.dtype, torch.float32)
    with torch.autocast(x.device.type, enabled=False):
        x, dt, B, C = (t.to(dtype) for t in (x, dt, B, C))
        a = (dt * A.to(dtype)).exp()  # [b, H]
        state = state.to(dtype) * a[..., None, None] + (x * dt[..., None])[..., None] * B[:, None, None, :]
        y = (state @ C[:, None, :, None]).squeeze(-1)
        return y, state
