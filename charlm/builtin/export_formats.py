"""The export formats registered by ``charlm.builtin.exporters`` (their options are there).

``int8`` and ``safetensors`` write the charlm weights artefact (``charlm.artifact``), which
loads back into a ``ByteLM``. ``torch-export`` and ``torchscript`` write a program of the
full-sequence forward (bytes [B, T] -> logits [B, T, 256]) that runs without charlm's model
code; the job config rides along as an extra file ``charlm.json``. Each recognises its own
artefacts by content, so ``--checkpoint ARTEFACT`` finds its format whatever the file's name.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

import charlm
from charlm.artifact import SCHEME, artifact_weights, load_artifact, save_artifact
from charlm.builtin.exporters import Int8Options, SafetensorsOptions
from charlm.config import to_dict
from charlm.errors import CharLMError, ConfigError
from charlm.export import LogitsOnly
from charlm.quantize import check_group_size, quantized_state_dict
from charlm.runners import ModelRunner, SequenceRunner

CONFIG_FILE = "charlm.json"  # the job config inside a program artefact


class Int8Exporter:
    suffix = ".int8"
    exact = False

    def __init__(self, options: Int8Options):
        self.group_size = options.group_size

    def export(self, model: nn.Module, job, path: Path) -> None:
        try:
            check_group_size(model, self.group_size)
        except ValueError as exc:
            raise ConfigError(f"export.group_size: {exc}") from None
        state, names = quantized_state_dict(model, self.group_size)
        quantization = {"scheme": SCHEME, "group_size": self.group_size, "modules": names}
        save_artifact(path, state, job, "int8", quantization)

    def recognise(self, path: Path) -> bool:
        return artifact_weights(path) == "int8"

    def load(self, path: Path, device: torch.device) -> ModelRunner:
        return ModelRunner(*load_artifact(path, device))


class SafetensorsExporter:
    suffix = ".safetensors"

    def __init__(self, options: SafetensorsOptions):
        self.dtype = torch.float32 if options.dtype == "fp32" else torch.bfloat16
        self.exact = options.dtype == "fp32"  # bf16 rounds weights: gated like a lossy format

    def export(self, model: nn.Module, job, path: Path) -> None:
        state = {k: v.to(self.dtype) if v.is_floating_point() else v for k, v in model.state_dict().items()}
        save_artifact(path, state, job, "float32" if self.exact else "bfloat16")

    def recognise(self, path: Path) -> bool:
        # every charlm artefact but int8, so an unknown ``weights`` gets load_artifact's message
        return artifact_weights(path) not in (None, "int8")

    def load(self, path: Path, device: torch.device) -> ModelRunner:
        return ModelRunner(*load_artifact(path, device))


def _config_json(job) -> str:
    return json.dumps({"config": to_dict(job), "charlm_version": charlm.__version__})


def _zip_entries(path: Path) -> set[str]:
    """The names inside a zip archive below its top directory ("extra/charlm.json"); empty when
    ``path`` is no zip. torch.export and TorchScript archives both are, with different entries."""
    try:
        with zipfile.ZipFile(path) as zf:
            return {name.partition("/")[2] for name in zf.namelist()}
    except (OSError, zipfile.BadZipFile):
        return set()


def _max_len(path: Path, text: str) -> int:
    try:
        return int(json.loads(text)["config"]["seq_len"])
    except (ValueError, KeyError, TypeError):
        raise CharLMError(f"{path}: its {CONFIG_FILE} is missing or unreadable; re-export it") from None


class TorchExportExporter:
    """A ``torch.export`` program; load it with ``torch.export.load(path).module()``.

    Batch and length are dynamic, over the ranges torch.export infers from the blocks (for
    attention, length 2 to the trained context: one byte is another attention path). Named
    ``Dim`` ranges would be rejected for blocks whose guards the solver cannot prove, such as
    the SSM's chunking; ``Dim.AUTO`` keeps those as checks in the program.
    """

    suffix = ".pt2"
    exact = True

    def export(self, model: nn.Module, job, path: Path) -> None:
        example = torch.zeros(2, job.seq_len, dtype=torch.long)
        dynamic = {"idx": {0: torch.export.Dim.AUTO, 1: torch.export.Dim.AUTO}}
        program = torch.export.export(LogitsOnly(model).eval(), (example,), dynamic_shapes=dynamic)
        torch.export.save(program, path, extra_files={CONFIG_FILE: _config_json(job)})

    def recognise(self, path: Path) -> bool:
        entries = _zip_entries(path)
        return f"extra/{CONFIG_FILE}" in entries and "archive_format" in entries

    def load(self, path: Path, device: torch.device) -> SequenceRunner:
        extra = {CONFIG_FILE: ""}
        with open(path, "rb") as f:  # a buffer: torch.export.load refuses names not ending in .pt2
            module = torch.export.load(f, extra_files=extra).module()
        return SequenceRunner(module, _max_len(path, extra[CONFIG_FILE]))


class TorchScriptExporter:
    """A traced TorchScript module (deprecated upstream; kept because people deploy it)."""

    suffix = ".ts"
    exact = True

    def export(self, model: nn.Module, job, path: Path) -> None:
        example = torch.zeros(1, job.seq_len, dtype=torch.long)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the deprecation notice and tracer chatter
            traced = torch.jit.trace(LogitsOnly(model).eval(), example, check_trace=False)
            torch.jit.save(traced, str(path), _extra_files={CONFIG_FILE: _config_json(job)})

    def recognise(self, path: Path) -> bool:
        entries = _zip_entries(path)
        return f"extra/{CONFIG_FILE}" in entries and "constants.pkl" in entries

    def load(self, path: Path, device: torch.device) -> SequenceRunner:
        extra = {CONFIG_FILE: ""}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
        return SequenceRunner(module, _max_len(path, extra[CONFIG_FILE]), device)


def torch_export(options) -> TorchExportExporter:
    return TorchExportExporter()


def torchscript(options) -> TorchScriptExporter:
    return TorchScriptExporter()
