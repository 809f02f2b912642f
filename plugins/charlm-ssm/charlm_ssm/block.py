"""The ``ssm`` block: a Mamba-2 selective state-space layer with a pre-norm residual.

    x -> norm -> in_proj -> [z | x B C | dt]
                             x B C -> causal depthwise conv -> SiLU -> SSD scan (+ D skip)
                             y -> RMSNorm(y * SiLU(z)) -> out_proj -> + x

dt, B and C depend on the input (the "selective" part); each head has one scalar decay A.
The state is (conv tail, SSM state): the last d_conv - 1 conv inputs and one
[head_dim, d_state] matrix per head, so it does not grow with the sequence.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from charlm import get_registry, init_residual_projection
from charlm_ssm.config import SSMConfig
from charlm_ssm.ssd import ssd_chunked, ssd_step


class GatedRMSNorm(nn.Module):
    """RMSNorm(y * SiLU(z)): Mamba-2 gates before normalising, which keeps the scale of y in check."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        y = (y * F.silu(z)).float()
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)
        return y.to(z.dtype) * self.weight


class SSMBlock(nn.Module):
    max_context = None  # the state is a fixed size: any position can be decoded

    def __init__(self, cfg: SSMConfig, model, layer_index: int = 0, positional=None, max_len: int | None = None):
        super().__init__()
        d_model = model.d_model
        self.n_heads, self.head_dim = cfg.heads(d_model)
        self.d_inner = cfg.expand * d_model
        self.d_state = cfg.d_state
        self.d_conv = cfg.d_conv
        self.chunk_size = cfg.chunk_size
        self.conv_dim = self.d_inner + 2 * cfg.d_state  # x, B and C all go through the conv

        self.norm = get_registry().create("norm", model.norm, dim=d_model)
        self.in_proj = nn.Linear(d_model, self.d_inner + self.conv_dim + self.n_heads, bias=False)
        self.conv = nn.Conv1d(self.conv_dim, self.conv_dim, cfg.d_conv, groups=self.conv_dim)
        self.dt_bias = nn.Parameter(torch.empty(self.n_heads))
        self.A_log = nn.Parameter(torch.empty(self.n_heads))
        self.D = nn.Parameter(torch.empty(self.n_heads))
        self.out_norm = GatedRMSNorm(self.d_inner)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)
        self._init(cfg, model)

    @torch.no_grad()
    def _init(self, cfg: SSMConfig, model) -> None:
        nn.init.normal_(self.in_proj.weight, std=model.init_std)
        init_residual_projection(self.out_proj.weight, model)  # as the core's blocks do
        # Mamba: step sizes log-uniform in [dt_min, dt_max], stored through softplus's inverse
        dt = torch.exp(torch.rand(self.n_heads) * (math.log(cfg.dt_max) - math.log(cfg.dt_min)) + math.log(cfg.dt_min))
        dt = dt.clamp(min=1e-4)  # Mamba's floor on the initial step size
        self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        # Mamba-2: decay rates A = -exp(A_log) uniform in [1, 16]; the skip D starts at 1
        self.A_log.copy_(torch.empty(self.n_heads).uniform_(1, 16).log())
        self.D.fill_(1.0)

    def no_weight_decay(self) -> set[str]:
        return {"A_log", "D", "dt_bias"}

    def flops_per_token(self, seq_len: int) -> float:
        """Forward FLOPs of the SSD scan (beyond parameter matmuls): per token, C.B and the masked
        product inside a chunk, then writing and reading the state."""
        Q = self.chunk_size
        return 2 * Q * (self.d_state + self.d_inner) + 4 * self.d_inner * self.d_state

    def init_state(self, batch: int, max_len: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        conv_tail = torch.zeros(batch, self.conv_dim, self.d_conv - 1, device=device, dtype=dtype)
        ssm = torch.zeros(batch, self.n_heads, self.head_dim, self.d_state, device=device, dtype=torch.float32)
        return conv_tail, ssm

    def _conv(self, xBC: torch.Tensor, tail: torch.Tensor | None):
        """Causal depthwise conv over time: [b, T, C] -> [b, T, C], and the new tail (None without a state)."""
        xBC = xBC.transpose(1, 2)
        if tail is None:
            return self.conv(F.pad(xBC, (self.d_conv - 1, 0))).transpose(1, 2), None
        window = torch.cat([tail.to(xBC.dtype), xBC], dim=-1)
        if xBC.shape[-1] == 1:  # decode: a weighted sum over the window costs less than a conv1d call
            out = (window * self.conv.weight[:, 0]).sum(-1, keepdim=True) + self.conv.bias[:, None]
        else:
            out = self.conv(window)
        return out.transpose(1, 2), window[..., window.shape[-1] - (self.d_conv - 1) :]

    def forward(self, x: torch.Tensor, pos: int = 0, state=None):
        b, T, _ = x.shape
        z, xBC, dt = self.in_proj(self.norm(x)).split([self.d_inner, self.conv_dim, self.n_heads], dim=-1)
        xBC, tail = self._conv(xBC, None if state is None else state[0])
        xs, B, C = F.silu(xBC).split([self.d_inner, self.d_state, self.d_state], dim=-1)
        xs = xs.view(b, T, self.n_heads, self.head_dim)
        dt = F.softplus(dt.float() + self.dt_bias.float())  # decay math in float32
        A = -torch.exp(self.A_log.float())
        if state is not None and T == 1:
            y, ssm = ssd_step(xs[:, 0], dt[:, 0], A, B[:, 0], C[:, 0], state[1])
            y = y[:, None]
        else:
            y, ssm = ssd_chunked(xs, dt, A, B, C, self.chunk_size, None if state is None else state[1])
        y = y + xs * self.D[:, None].to(y.dtype)
        y = self.out_norm(y.reshape(b, T, self.d_inner).to(x.dtype), z)
        return x + self.out_proj(y), (None if state is None else (tail, ssm))
