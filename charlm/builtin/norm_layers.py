"""The normalisation layers registered by ``charlm.builtin.norm`` (their options are there)."""

from torch import nn

from charlm.builtin.norm import NormConfig


def rmsnorm(options: NormConfig, dim: int) -> nn.Module:
    return nn.RMSNorm(dim, eps=options.eps)


def layernorm(options: NormConfig, dim: int) -> nn.Module:
    return nn.LayerNorm(dim, eps=options.eps)
