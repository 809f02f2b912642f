"""CharLM: byte-level language models, assembled from plugins."""

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("charlm")
"""Marks a plugin's hook implementations: ``@charlm.hookimpl def register_blocks(register): ...``."""


def load(checkpoint, device="cpu"):
    """Load a trained model from a checkpoint, a run directory or any exporter's artefact
    (see ``charlm.loading``), ready to ``generate``."""
    from charlm.loading import load_model

    return load_model(checkpoint, device=device)


__all__ = ["__version__", "hookimpl", "load"]
