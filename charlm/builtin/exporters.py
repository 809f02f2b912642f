"""Built-in export formats: int8, safetensors, torch-export, torchscript.

This module holds the options and the registration; the exporters are in
``charlm.builtin.export_formats``, imported when one is built (this plugin imports no torch).
"""

from typing import Literal

import attrs

import charlm
from charlm.validators import non_negative


@attrs.define
class Int8Options:
    # input columns that share a scale; 0 is one scale per output channel (the smallest file)
    group_size: int = attrs.field(default=0, validator=non_negative)


@attrs.define
class SafetensorsOptions:
    dtype: Literal["fp32", "bf16"] = "fp32"


@charlm.hookimpl
def register_exporters(register):
    register("int8", "charlm.builtin.export_formats:Int8Exporter", config=Int8Options, help="weight-only int8 safetensors (per-channel or per-group scales)")
    register("safetensors", "charlm.builtin.export_formats:SafetensorsExporter", config=SafetensorsOptions, help="fp32/bf16 weights + config (safetensors)")
    register("torch-export", "charlm.builtin.export_formats:torch_export", help="torch.export program (.pt2) of the full forward")
    register("torchscript", "charlm.builtin.export_formats:torchscript", help="traced TorchScript (legacy) of the full forward")
