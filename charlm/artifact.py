"""The charlm weights artefact: a safetensors file that rebuilds its model without a checkpoint.

The ``int8`` and ``safetensors`` exporters write it and read it back; ``charlm generate`` and
``charlm eval`` load it with ``--checkpoint`` (``charlm.loading``). The file is recognised by
its content (the safetensors header and its ``format`` metadata), whatever its name. Metadata (safetensors keeps only strings):

- ``format`` = ``charlm``, ``format_version`` = ``1``, ``charlm_version``;
- ``weights``: ``float32``, ``bfloat16`` or ``int8``;
- ``config``: the job config as JSON (``charlm.config.to_dict``);
- for int8, ``quantization``: JSON ``{"scheme", "group_size", "modules"}``: each listed
  Linear/Embedding is stored as ``NAME.qweight`` (int8) and ``NAME.scale`` (float32).

Any reader of safetensors can use the float file; the int8 one needs ``w = qweight * scale``
per group (see ``charlm.quantize``).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import torch

from charlm import __version__
from charlm.atomic import write_atomic
from charlm.errors import CharLMError, ConfigError, UsageError, first_line

FORMAT = "charlm"
FORMAT_VERSION = "1"
SCHEME = "int8-symmetric"
WEIGHTS = ("float32", "bfloat16", "int8")
RESIDENT = ("auto", "float", "int8")
# "auto" keeps int8 weights int8 on a CPU once their float32 matmul weights are this large:
# batch-1 decode then waits on memory, and int8 reads 4x fewer bytes (bench/results/decode.md:
# 1.2-1.4x at the 10.7M shape, 43 MB of float32 weights; the micro model's 2.6 MB stay in
# cache, where float32 is faster)
INT8_RESIDENT_MIN_BYTES = 16 << 20
MAX_HEADER = 100_000_000  # safetensors' own limit on the JSON header


def save_artifact(path: Path, state: dict[str, torch.Tensor], job, weights: str, quantization: dict | None = None) -> None:
    """Write ``state`` and the metadata that rebuilds the model, atomically."""
    from safetensors.torch import save

    from charlm.config import to_dict

    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "charlm_version": __version__,
        "weights": weights,
        "config": json.dumps(to_dict(job)),
    }
    if quantization is not None:
        metadata["quantization"] = json.dumps(quantization)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    write_atomic(path, save(tensors, metadata=metadata))


def read_metadata(path: str | Path) -> dict[str, str] | None:
    """The safetensors metadata of ``path``; ``None`` when the file is not a safetensors file."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return None
            (size,) = struct.unpack("<Q", head)
            if not 2 <= size <= MAX_HEADER:
                return None
            header = json.loads(f.read(size))
    except (OSError, ValueError):
        return None
    if not isinstance(header, dict):
        return None
    metadata = header.get("__metadata__") or {}
    return metadata if isinstance(metadata, dict) else None


def artifact_weights(path: str | Path) -> str | None:
    """The ``weights`` of a charlm weights artefact ("int8", ...; by content, not by name);
    ``None`` when ``path`` is not one."""
    metadata = read_metadata(path)
    if metadata is None or metadata.get("format") != FORMAT:
        return None
    return str(metadata.get("weights"))


def load_artifact(path: str | Path, device: str | torch.device = "cpu", resident: str = "auto"):
    """An artefact -> ``(model, job)``: a ``ByteLM`` in eval mode on ``device`` and its ``JobConfig``.

    int8 weights stay int8 in the file; ``resident`` says how the model holds them (see
    ``charlm.quantize``): ``"float"`` dequantises once here, ``"int8"`` keeps them int8 (4x
    less weight memory; a CPU decode step reads them as int8, longer inputs dequantise inside
    every matmul); ``"auto"``: int8 on a CPU for weights of ``INT8_RESIDENT_MIN_BYTES`` or
    more as float32, else float.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from charlm.config import config_from_dict
    from charlm.model import ByteLM
    from charlm.quantize import Int8Linear, expand_int8, swap_in_int8

    path = Path(path)
    if resident not in RESIDENT:
        raise UsageError(f"resident must be one of {', '.join(RESIDENT)}, got {resident!r}")
    if not path.is_file():
        raise CharLMError(f"{path}: no such file")
    metadata = read_metadata(path)
    if metadata is None or metadata.get("format") != FORMAT:
        raise CharLMError(f"{path}: not a charlm artefact (no safetensors header with format={FORMAT!r})")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise CharLMError(
            f"{path}: artefact format version {metadata.get('format_version')!r} is not supported"
            f" (this charlm reads version {FORMAT_VERSION})"
        )
    weights = metadata.get("weights")
    if weights not in WEIGHTS:
        raise CharLMError(f"{path}: metadata weights={weights!r} is not one of {', '.join(WEIGHTS)}")
    try:
        job = config_from_dict(_json_field(path, metadata, "config"), validate=False)
    except ConfigError as exc:  # e.g. a block from a plugin that is not installed here
        raise ConfigError(f"{path}: {exc}") from None
    model = ByteLM(job.model, max_len=job.seq_len)
    if weights == "int8":
        group_size, names = _quantization(path, metadata, model)
        swap_in_int8(model, names, group_size)
    try:
        state = load_file(path)
    except (SafetensorError, OSError) as exc:
        raise CharLMError(f"{path}: cannot read the tensors ({exc})") from None
    if weights == "int8":
        _check_scales(path, state, names, group_size)
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except RuntimeError as exc:
        raise CharLMError(f"{path}: the tensors do not fit the config: {first_line(exc)}") from None
    if weights == "int8" and resident == "auto":
        matmuls = [m for m in model.modules() if isinstance(m, Int8Linear)]  # not the tables: a row each per byte
        big = sum(m.qweight.numel() for m in matmuls) * 4 >= INT8_RESIDENT_MIN_BYTES
        resident = "int8" if big and torch.device(device).type == "cpu" else "float"
    if weights == "int8" and resident == "float":
        expand_int8(model)
    return model.to(device).eval(), job


def _json_field(path: Path, metadata: dict, key: str) -> Any:
    try:
        return json.loads(metadata[key])
    except KeyError:
        raise CharLMError(f"{path}: metadata has no {key!r}") from None
    except ValueError as exc:
        raise CharLMError(f"{path}: metadata {key!r} is not valid JSON ({exc})") from None


def _quantization(path: Path, metadata: dict, model) -> tuple[int, list[str]]:
    """Check the int8 metadata against the model the config builds; return (group_size, modules)."""
    from charlm.quantize import quantizable

    quant = _json_field(path, metadata, "quantization")
    if not isinstance(quant, dict) or quant.get("scheme") != SCHEME:
        raise CharLMError(f"{path}: int8 metadata: scheme must be {SCHEME!r}, got {_get(quant, 'scheme')!r}")
    group_size, names = quant.get("group_size"), quant.get("modules")
    if type(group_size) is not int or group_size < 0:
        raise CharLMError(f"{path}: int8 metadata: group_size must be an integer >= 0, got {group_size!r}")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise CharLMError(f"{path}: int8 metadata: modules must be a list of module names, got {names!r}")
    known = set(quantizable(model))
    unknown = [n for n in names if n not in known]
    if unknown:
        raise CharLMError(
            f"{path}: int8 metadata names {len(unknown)} module(s) the config's model has no Linear/Embedding"
            f" for (first: {unknown[0]!r}); the metadata and the config disagree"
        )
    return group_size, names


def _check_scales(path: Path, state: dict, names: list[str], group_size: int) -> None:
    for name in names:
        q, scale = state.get(f"{name}.qweight"), state.get(f"{name}.scale")
        if q is None or scale is None:
            raise CharLMError(f"{path}: int8 module {name!r} has no {name}.qweight / {name}.scale tensors")
        if q.dtype != torch.int8:
            raise CharLMError(f"{path}: {name}.qweight is {q.dtype}, expected torch.int8")
        groups = q.shape[1] // group_size if group_size else 1
        if (group_size and q.shape[1] % group_size) or tuple(scale.shape) != (q.shape[0], groups):
            raise CharLMError(
                f"{path}: {name}.scale has shape {tuple(scale.shape)}, but group_size={group_size} on a"
                f" {tuple(q.shape)} weight needs {(q.shape[0], groups)}: the int8 metadata is wrong"
            )


def _get(value: Any, key: str) -> Any:
    return value.get(key) if isinstance(value, dict) else None
