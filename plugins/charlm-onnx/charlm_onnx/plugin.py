"""The entry point: registers the ``onnx`` exporter.

The exporter is named as ``"module:attr"``, so loading the plugin imports no torch (nor
onnx): ``charlm list-plugins`` and ``config validate`` stay fast.
"""

import charlm


@charlm.hookimpl
def register_exporters(register):
    register("onnx", "charlm_onnx.exporter:onnx_exporter", help="ONNX (dynamo): full forward + decode step with explicit state")
