"""ONNX export for CharLM (the ``onnx`` exporter): see ``charlm_onnx.exporter``."""

__version__ = "0.1.0"
