"""Positional encodings: rotary (on queries and keys), learned absolute (on the embeddings), none.

The model builds one positional encoding and hands it to every block, so a learned table is
stored once. ``pos`` is always the absolute position of the first byte of the input.
"""

import attrs
import torch
from torch import nn

import charlm
from charlm.errors import CharLMError
from charlm.validators import positive


@attrs.define
class RopeConfig:
    theta: float = attrs.field(default=10000.0, validator=positive)

    def check(self, job) -> None:
        head_dim = job.model.d_model // job.model.n_head
        if head_dim % 2:
            raise ValueError(
                f"rope rotates pairs of channels and needs an even head dim, got d_model / n_head ="
                f" {job.model.d_model} / {job.model.n_head} = {head_dim}"
            )


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
        return angles.cos().float(), angles.sin().float()

    def embed(self, x: torch.Tensor, pos: int) -> torch.Tensor:
        return x

    def rotate(self, q: torch.Tensor, k: torch.Tensor, pos: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotate q, k [B, H, T, D] as if q[:, :, 0] and k[:, :, 0] sat at absolute position ``pos``."""
        length = q.shape[2]
        if pos + length <= self.cos.shape[0]:
            cos, sin = self.cos[pos : pos + length], self.sin[pos : pos + length]
        else:  # past the trained context (long prompts, extrapolation): compute on demand
            cos, sin = self._tables(pos, length)
        return _rotate_half_split(q, cos, sin), _rotate_half_split(k, cos, sin)


def _rotate_half_split(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


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


def rope(options: RopeConfig, model, max_len: int) -> Rotary:
    return Rotary(model.head_dim, max_len, options.theta)


def learned(options, model, max_len: int) -> LearnedAbsolute:
    return LearnedAbsolute(model.d_model, max_len, model.init_std)


def none(options, model, max_len: int) -> NoPositional:
    return NoPositional()


@charlm.hookimpl
def register_positional_encodings(register):
    register("rope", rope, config=RopeConfig, help="rotary embeddings on queries and keys (any position)")
    register("learned", learned, help="learned absolute positions added to the embeddings")
    register("none", none, help="no positional encoding (NoPE)")
