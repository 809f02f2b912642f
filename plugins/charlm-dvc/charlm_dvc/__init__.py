"""charlm-dvc: DVC-versioned corpora for ``charlm data pull``, added through the plugin registry."""

__version__ = "0.1.0"
