"""Feed-forward layers: SwiGLU (default), squared ReLU and GELU, all without biases.

This module holds the options and the registration; the layers are in
``charlm.builtin.mlp_layers``, imported when one is built (this plugin imports no torch).
"""

import attrs

import charlm
from charlm.validators import positive


@attrs.define
class MLPConfig:
    hidden: int | None = attrs.field(default=None, validator=positive)  # None: see each factory


@charlm.hookimpl
def register_mlps(register):
    register("swiglu", "charlm.builtin.mlp_layers:swiglu", config=MLPConfig, help="SiLU-gated MLP, hidden 8/3 d_model by default")
    register("relu2", "charlm.builtin.mlp_layers:relu2", config=MLPConfig, help="squared-ReLU MLP, hidden 4 d_model by default")
    register("gelu", "charlm.builtin.mlp_layers:gelu", config=MLPConfig, help="GELU MLP, hidden 4 d_model by default")
