"""charlm-ssm: Mamba-2 style state-space blocks for CharLM, added through the plugin registry."""

__version__ = "0.1.0"
