"""The positional encodings registered by ``charlm.builtin.positional`` (rope's options are there).

The model builds one positional encoding and hands it to every block, so a learned table is
stored once. ``pos`` is always the absolute position of the first byte of the input.
"""

import math

import torch
from torch import nn

from charlm.builtin.positional import RopeConfig
from charlm.errors import CharLMError


class Rotary(nn.Module):
    """RoPE in the half-split layout: channel i is paired with channel i + head_dim / 2."""

    def __init__(self, head_dim: int, max_len: int, theta: float):
        super().__init__()
        inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        cos, sin = self._tables(0, max_len)
        # derived from theta: not saved, rebuilt at load
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def _tables(self, start: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        # angles in float64: at position 1e5 a float32 angle is already off by ~1e-2 rad
        positions = torch.arange(start, start + length, dtype=torch.float64, device=self.inv_freq.device)
        angles = torch.outer(positions, self.inv_freq)
        cos, sin = angles.cos().float(), angles.sin().float()
        # full head width, the sine signed per half: a rotation is then two products and a sum
        return torch.cat([cos, cos], dim=-1), torch.cat([-sin, sin], dim=-1)

    def embed(self, x: torch.Tensor, pos: int) -> torch.Tensor:
        return x

    def rotate(self, q: torch.Tensor, k: torch.Tensor, pos: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotate q, k [B, H, T, D] as if q[:, :, 0] and k[:, :, 0] sat at absolute position ``pos``."""
        length = q.shape[2]
        if pos + length <= self.cos.shape[0]:
            cos, sin = self.cos[pos : pos + length], self.sin[pos : pos + length]
        else:  # past the trained context (long prompts, extrapolation): compute on demand
            cos, sin = self._tables(pos, length)
        return rotate_half_split(q, cos, sin), rotate_half_split(k, cos, sin)


def rotate_half_split(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """(x1 cos - x2 sin, x2 cos + x1 sin) for the halves x1, x2 of ``x``, bit for bit, in half
    the ops (a decode step is dominated by op count): ``sin`` holds (-sin, sin), and
    x1 cos + x2 (-sin) rounds exactly as x1 cos - x2 sin."""
    if cos.dtype != x.dtype:
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((x2, x1), dim=-1) * sin


class LearnedAbsolute(nn.Module):
    """A learned vector per position, added to the byte embeddings (GPT-2 style)."""

    def __init__(self, d_model: int, max_len: int, init_std: float):
        super().__init__()
        self.table = nn.Embedding(max_len, d_model)
        nn.init.normal_(self.table.weight, std=init_std)

    def embed(self, x: torch.Tensor, pos: int) -> torch.Tensor:
        length = x.shape[1]
        if pos + length > self.table.num_embeddings:
            raise CharLMError(
                f"learned positions cover {self.table.num_embeddings} bytes, asked for positions"
                f" {pos}..{pos + length - 1}; keep the window within the trained context"
            )
        return x + self.table.weight[pos : pos + length]

    def rotate(self, q: torch.Tensor, k: torch.Tensor, pos: int) -> tuple[torch.Tensor, torch.Tensor]:
        return q, k


class NoPositional(nn.Module):
    """No positional signal: causal attention alone tells positions apart (NoPE)."""

    def embed(self, x: torch.Tensor, pos: int) -> torch.Tensor:
        return x

    def rotate(self, q: torch.Tensor, k: torch.Tensor, pos: int) -> tuple[torch.Tensor, torch.Tensor]:
        return q, k


class ALiBi(nn.Module):
    """Attention with Linear Biases (Press et al., 2022): head h adds ``-slope_h * distance``
    to the score of a query for a key ``distance`` bytes back. Depends on distances only, so
    any window start and any length work; nothing is learned or stored."""

    def __init__(self, n_head: int):
        super().__init__()
        self.register_buffer("slopes", torch.tensor(alibi_slopes(n_head)), persistent=False)

    def embed(self, x: torch.Tensor, pos: int) -> torch.Tensor:
        return x

    def rotate(self, q: torch.Tensor, k: torch.Tensor, pos: int) -> tuple[torch.Tensor, torch.Tensor]:
        return q, k

    def bias(self, q_len: int, k_len: int, offset: int, device) -> torch.Tensor:
        """[H, q_len, k_len] float32 for queries at key indices ``offset``.. (0 on the diagonal;
        the entries above it are for the attention to mask)."""
        query_at = torch.arange(offset, offset + q_len, device=device, dtype=torch.float32)
        key_at = torch.arange(k_len, device=device, dtype=torch.float32)
        distance = query_at[:, None] - key_at[None, :]
        return -self.slopes.float()[:, None, None] * distance


def alibi_slopes(n_head: int) -> list[float]:
    """The geometric sequence 2^(-8/n), 2^(-16/n), ... for n a power of two; otherwise the
    paper's interpolation: the slopes of the power of two below, then every other slope of
    the power of two above."""

    def geometric(n: int) -> list[float]:
        return [2 ** (-8 * (i + 1) / n) for i in range(n)]

    below = 2 ** math.floor(math.log2(n_head))
    if below == n_head:
        return geometric(n_head)
    return geometric(below) + geometric(2 * below)[0::2][: n_head - below]


def rope(options: RopeConfig, model, max_len: int) -> Rotary:
    return Rotary(model.head_dim, max_len, options.theta)


def learned(options, model, max_len: int) -> LearnedAbsolute:
    return LearnedAbsolute(model.d_model, max_len, model.init_std)


def alibi(options, model, max_len: int) -> ALiBi:
    return ALiBi(model.n_head)


def none(options, model, max_len: int) -> NoPositional:
    return NoPositional()
