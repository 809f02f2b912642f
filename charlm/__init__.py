"""CharLM: byte-level language models, assembled from plugins.

``__all__`` is the public API: what a plugin may import (``from charlm import ...``). Nothing
under ``charlm.builtin`` is part of it. Names are imported on first use, so ``import charlm``
stays light (no torch) for the CLI and for plugin modules that only register components.
"""

import importlib
import importlib.metadata

import pluggy

try:
    __version__ = importlib.metadata.version("charlm-toolkit")  # pyproject.toml is the one source
except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

hookimpl = pluggy.HookimplMarker("charlm")
"""Marks a plugin's hook implementations: ``@charlm.hookimpl def register_blocks(register): ...``."""

# public name -> the module that defines it
_LAZY = {
    # reaching components: the process-wide registry
    "get_registry": "charlm.registry",
    # what each kind provides (charlm.interfaces)
    "Block": "charlm.interfaces",
    "PositionalEncoding": "charlm.interfaces",
    "Sampler": "charlm.interfaces",
    "Scheduler": "charlm.interfaces",
    "Exporter": "charlm.interfaces",
    "Runner": "charlm.interfaces",
    "DataSource": "charlm.interfaces",
    # helpers for blocks
    "init_residual_projection": "charlm.model",
    "KVCache": "charlm.builtin.gqa",
    # helpers for exporters: ready Runners, the logits-only wrapper, the job as plain data and back
    "ModelRunner": "charlm.runners",
    "SequenceRunner": "charlm.runners",
    "LogitsOnly": "charlm.export",
    "to_dict": "charlm.config",
    "model_from_checkpoint": "charlm.checkpoint",
    # helpers for data sources: a download verified by sha256, reused when already there
    "download": "charlm.downloads",
    "is_verified": "charlm.downloads",
    "temp_beside": "charlm.atomic",  # write beside the target, os.replace when complete
    # options: attrs validators whose errors name the key
    "positive": "charlm.validators",
    "non_negative": "charlm.validators",
    "in_range": "charlm.validators",
    # errors that become one line and an exit code
    "CharLMError": "charlm.errors",
    "UsageError": "charlm.errors",
    "ConfigError": "charlm.errors",
    "PluginError": "charlm.errors",
}
_SUBMODULES = ("testing",)  # contract checks: ``from charlm.testing import check_block``

__all__ = ["__version__", "hookimpl", "load", *_LAZY, *_SUBMODULES]


def load(checkpoint, device="cpu"):
    """Load a trained model from a checkpoint, a run directory or any exporter's artefact
    (see ``charlm.loading``), ready to ``generate``."""
    from charlm.loading import load_model

    return load_model(checkpoint, device=device)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"charlm.{name}")
    else:
        raise AttributeError(f"module 'charlm' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__():
    return sorted({*globals(), *__all__})
