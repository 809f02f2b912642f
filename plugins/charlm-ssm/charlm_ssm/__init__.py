"""charlm-ssm: Mamba-2 style state-space blocks for CharLM, added through the plugin registry."""

import importlib.metadata

__version__ = importlib.metadata.version("charlm-ssm")  # pyproject.toml is the one source
