"""The options of the ``ssm`` block, as they appear in a job's ``[model.block]`` table.

Rules on one option live in attrs validators; rules that need the model's width live in
``check(job)``, which the core calls during validation. Either way the error names the key.
"""

from __future__ import annotations

import attrs

from charlm import positive

DEFAULT_HEAD_DIM = 32


@attrs.define
class SSMConfig:
    d_state: int = attrs.field(default=64, validator=positive)  # N: the state size per channel
    head_dim: int | None = attrs.field(default=None, validator=positive)  # P; None: 32, or from n_heads
    n_heads: int | None = attrs.field(default=None, validator=positive)  # None: d_inner // head_dim
    expand: int = attrs.field(default=2, validator=positive)  # d_inner = expand * d_model
    d_conv: int = attrs.field(default=4, validator=positive)  # width of the causal depthwise conv
    chunk_size: int = attrs.field(default=64, validator=positive)  # steps per SSD chunk
    dt_min: float = attrs.field(default=0.001, validator=positive)  # range of the initial step size
    dt_max: float = attrs.field(default=0.1, validator=positive)

    def __attrs_post_init__(self):
        if self.dt_min > self.dt_max:
            raise ValueError(f"dt_min={self.dt_min} must be <= dt_max={self.dt_max}")
        if self.head_dim is not None and self.n_heads is not None:
            raise ValueError(f"set head_dim ({self.head_dim}) or n_heads ({self.n_heads}), not both")

    def heads(self, d_model: int) -> tuple[int, int]:
        """(n_heads, head_dim) for a model of width ``d_model``; ValueError when they do not fit."""
        d_inner = self.expand * d_model
        if self.n_heads is not None:
            if d_inner % self.n_heads:
                raise ValueError(f"n_heads: {self.n_heads} does not divide expand * d_model = {d_inner}")
            return self.n_heads, d_inner // self.n_heads
        head_dim = self.head_dim or DEFAULT_HEAD_DIM
        if d_inner % head_dim:
            raise ValueError(f"head_dim: {head_dim} does not divide expand * d_model = {d_inner}")
        return d_inner // head_dim, head_dim

    def check(self, job) -> None:
        self.heads(job.model.d_model)
