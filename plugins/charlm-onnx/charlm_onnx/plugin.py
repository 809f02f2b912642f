"""The entry point: registers the ``onnx`` exporter."""

import charlm
from charlm_onnx.exporter import OnnxExporter


@charlm.hookimpl
def register_exporters(register):
    register("onnx", lambda options: OnnxExporter(), help="ONNX (dynamo): full forward + decode step with explicit state")
