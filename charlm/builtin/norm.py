"""Normalisation layers: RMSNorm (default) and LayerNorm, each with a learned gain."""

import attrs
from torch import nn

import charlm
from charlm.validators import positive


@attrs.define
class NormConfig:
    eps: float = attrs.field(default=1e-6, validator=positive)


def rmsnorm(options: NormConfig, dim: int) -> nn.Module:
    return nn.RMSNorm(dim, eps=options.eps)


def layernorm(options: NormConfig, dim: int) -> nn.Module:
    return nn.LayerNorm(dim, eps=options.eps)


@charlm.hookimpl
def register_norms(register):
    register("rmsnorm", rmsnorm, config=NormConfig, help="root-mean-square norm with a learned gain")
    register("layernorm", layernorm, config=NormConfig, help="layer norm with a learned gain and bias")
