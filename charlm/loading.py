"""One path from a file to a model: a checkpoint, a run directory, or any exporter's artefact.

``charlm generate``, ``charlm eval``, ``charlm export`` and ``charlm.load`` all come here:

- ``RUN_DIR`` (a directory with ``checkpoints/last.pt``) means that checkpoint (an FSDP run's:
  its newest ``step-NNNNNN.dcp`` directory, read as one file, see ``charlm.dcp_checkpoint``);
- an artefact is found by asking every installed exporter ``recognise(path)`` (by content,
  whatever the name) and runs through the ``Runner`` its ``load`` returns;
- anything else is read as a checkpoint (``torch.load(weights_only=True)``, never code)
  and rebuilt as a ``ByteLM`` from the job config it holds.
"""

from __future__ import annotations

from pathlib import Path

import torch

from charlm.errors import CharLMError, ConfigError, PluginError, first_line
from charlm.generate import LanguageModel
from charlm.interfaces import Runner
from charlm.runners import ModelRunner

RUN_CHECKPOINT = Path("checkpoints") / "last.pt"


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LanguageModel:
    """A checkpoint, run directory or artefact -> a ``LanguageModel`` on ``device``
    ("auto" picks cuda, then mps, then cpu)."""
    return LanguageModel(load_runner(path, device))


def load_runner(path: str | Path, device: str | torch.device = "cpu") -> Runner:
    """A checkpoint, run directory or artefact -> the ``Runner`` that runs it on ``device``."""
    from charlm.config import resolve_device
    from charlm.dcp_checkpoint import is_dcp_checkpoint

    device = resolve_device(device) if isinstance(device, str) else device
    path = checkpoint_path(path)
    if not path.exists():
        raise CharLMError(f"{path}: no such checkpoint, run directory or artefact")
    found = recognising_exporter(path)
    if found is None:
        if path.is_dir() and not is_dcp_checkpoint(path):
            raise CharLMError(
                f"{path}: neither a run directory (no {RUN_CHECKPOINT}) nor an artefact of an installed"
                " exporter (charlm export --list)"
            )
        return ModelRunner(*load_checkpoint_model(path, device))
    return open_artefact(*found, path, device)


def checkpoint_path(path: str | Path) -> Path:
    """``RUN_DIR`` -> ``RUN_DIR/checkpoints/last.pt``, or an FSDP run's newest DCP directory; any other path as it is."""
    from charlm.checkpoint import checkpoint_files

    path = Path(path)
    newest = checkpoint_files(path / RUN_CHECKPOINT.parent)
    return newest[0] if newest else path


def load_checkpoint_model(path: str | Path, device: str | torch.device = "cpu"):
    """A checkpoint -> ``(ByteLM in eval mode on device, JobConfig)``; every failure names the file."""
    from charlm.checkpoint import load_checkpoint, model_from_checkpoint

    payload = load_checkpoint(path)
    missing = [key for key in ("model", "config") if key not in payload]
    if missing:
        raise CharLMError(f"{path}: checkpoint has no {' or '.join(missing)}")
    try:
        return model_from_checkpoint(payload, device)
    except ConfigError as exc:  # e.g. a block from a plugin that is not installed here
        raise ConfigError(f"{path}: {exc}") from None
    except RuntimeError as exc:  # weights that do not fit the config
        raise CharLMError(f"{path}: cannot rebuild the model: {first_line(exc)}") from None


def recognising_exporter(path: Path):
    """``(name, exporter)`` of the first exporter (by name) that recognises ``path``, or None.

    Exporters are built with their default options; one that cannot be (a required option)
    or that predates ``recognise`` is only used by ``charlm export``.
    """
    from charlm.export import make_exporter
    from charlm.registry import get_registry

    for name in get_registry().names("exporter"):
        try:
            exporter = make_exporter(name)
        except ConfigError:
            continue
        recognise = getattr(exporter, "recognise", None)
        if recognise is not None and recognise(path):
            return name, exporter
    return None


def open_artefact(name: str, exporter, path: Path, device: torch.device) -> Runner:
    """``exporter.load(path, device)``, its failures as one line naming the file and format."""
    try:
        runner = exporter.load(path, device)
    except CharLMError:
        raise
    except Exception as exc:  # onnxruntime, torch.export: pages of text; the first line names the cause
        raise CharLMError(f"{path}: cannot load this {name} artefact: {type(exc).__name__}: {first_line(exc)}") from exc
    if not isinstance(runner, Runner):
        raise PluginError(
            f"exporter {name!r}: load() returned a {type(runner).__name__}, not a Runner"
            " (subclass charlm.interfaces.Runner)"
        )
    return runner
