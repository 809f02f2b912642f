"""ONNX export for CharLM (the ``onnx`` exporter): see ``charlm_onnx.exporter``."""

import importlib.metadata

__version__ = importlib.metadata.version("charlm-onnx")  # pyproject.toml is the one source
