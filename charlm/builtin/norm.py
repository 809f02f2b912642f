"""Normalisation layers: RMSNorm (default) and LayerNorm, each with a learned gain.

This module holds the options and the registration; the layers are built by
``charlm.builtin.norm_layers``, imported when one is built (this plugin imports no torch).
"""

import attrs

import charlm
from charlm.validators import positive


@attrs.define
class NormConfig:
    eps: float = attrs.field(default=1e-6, validator=positive)


@charlm.hookimpl
def register_norms(register):
    register("rmsnorm", "charlm.builtin.norm_layers:rmsnorm", config=NormConfig, help="root-mean-square norm with a learned gain")
    register("layernorm", "charlm.builtin.norm_layers:layernorm", config=NormConfig, help="layer norm with a learned gain and bias")
