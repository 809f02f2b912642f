"""CharLM: byte-level language models, assembled from plugins."""

import importlib.metadata

import pluggy

try:
    __version__ = importlib.metadata.version("charlm-toolkit")  # pyproject.toml is the one source
except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

hookimpl = pluggy.HookimplMarker("charlm")
"""Marks a plugin's hook implementations: ``@charlm.hookimpl def register_blocks(register): ...``."""


def load(checkpoint, device="cpu"):
    """Load a trained model from a checkpoint or exported artefact (see ``charlm.generate``)."""
    from charlm.generate import load_model

    return load_model(checkpoint, device=device)


__all__ = ["__version__", "hookimpl", "load"]
