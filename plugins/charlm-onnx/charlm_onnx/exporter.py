"""The ``onnx`` exporter: ONNX graphs of a charlm model (torch.onnx dynamo exporter), run by onnxruntime.

The artefact is a directory:

- ``forward.onnx``: bytes ``idx`` [batch, length] (int64, from position 0; length 2 ... the
  trained context) -> ``logits`` [batch, length, 256];
- ``decode_step.onnx`` (when the model's states allow it): ``token`` [batch, 1], ``pos`` (int64
  scalar) and ``state_0 ... state_N`` -> ``logits`` [batch, 256] and ``new_state_0 ... new_state_N``;
  a sequence starts from all-zero states and feeds its bytes one at a time;
- ``charlm.json``: the job config, and the state shapes/dtypes (batch first) or why there is
  no decode-step graph.

The model never looks inside a block's state, so neither does this exporter: a state is
flattened with ``torch.utils._pytree``. When every leaf is a tensor (an SSM's tuple of
tensors), the cache becomes explicit graph inputs/outputs. A state that is an opaque object
(the built-in attention's ``KVCache``, which tracks its fill level in a Python int) cannot be,
so transformer and hybrid stacks get the forward graph only and decode by re-running it.
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils import _pytree as pytree

import charlm
from charlm import CharLMError, LogitsOnly, Runner, to_dict

FORWARD, DECODE, META = "forward.onnx", "decode_step.onnx", "charlm.json"


class DecodeStep(nn.Module):
    """One byte through the model with its state as flat tensors: what decode_step.onnx computes."""

    def __init__(self, model: nn.Module, spec):
        super().__init__()
        self.model, self.spec = model, spec

    def forward(self, token: torch.Tensor, pos: torch.Tensor, *leaves: torch.Tensor):
        position = pos.item()
        torch._check(position >= 0)
        logits, states = self.model(token, position, pytree.tree_unflatten(list(leaves), self.spec))
        return (logits[:, -1], *pytree.tree_leaves(states))


def _export(module: nn.Module, args: tuple, dynamic_shapes, input_names, output_names, path: Path) -> None:
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)  # "torchvision is not installed" and other exporter notes
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # chatter about axis names and treespecs
            program = torch.onnx.export(
                module.eval(), args, dynamo=True, dynamic_shapes=dynamic_shapes, input_names=input_names,
                output_names=output_names, verbose=False,
            )
    finally:
        onnx_log.setLevel(level)
    program.save(str(path))


def decode_step_blocker(leaves: list) -> str | None:
    """Why a state cannot be explicit graph inputs, or None when it can."""
    for leaf in leaves:
        if not isinstance(leaf, torch.Tensor):
            return f"a block state holds a {type(leaf).__name__}, not only tensors (torch.utils._pytree leaves)"
        if leaf.count_nonzero():
            return "a block's initial state is not all zeros"
    return None


class OnnxExporter:
    suffix = ".onnx"
    exact = True

    def export(self, model: nn.Module, job, path: Path) -> None:
        path.mkdir(parents=True)
        # Dim.AUTO: torch.export infers each range (named ranges fail on guards it cannot prove)
        batch, length = torch.export.Dim.AUTO, torch.export.Dim.AUTO
        example = torch.zeros(2, job.seq_len, dtype=torch.long)
        _export(LogitsOnly(model), (example,), {"idx": {0: batch, 1: length}}, ["idx"], ["logits"], path / FORWARD)

        meta = {"config": to_dict(job), "charlm_version": charlm.__version__, "max_len": job.seq_len}
        leaves, spec = pytree.tree_flatten(model.init_states(1, job.seq_len, torch.device("cpu"), torch.float32))
        meta["decode_step_skipped"] = decode_step_blocker(leaves)
        if meta["decode_step_skipped"] is None:
            names = [f"state_{i}" for i in range(len(leaves))]
            examples = tuple(torch.zeros(2, *leaf.shape[1:], dtype=leaf.dtype) for leaf in leaves)
            _export(
                DecodeStep(model, spec), (torch.zeros(2, 1, dtype=torch.long), torch.tensor(0), *examples),
                ({0: batch}, None, tuple({0: batch} for _ in leaves)),
                ["token", "pos", *names], ["logits", *(f"new_{n}" for n in names)], path / DECODE,
            )
            meta["states"] = [{"shape": list(leaf.shape[1:]), "dtype": str(leaf.dtype).removeprefix("torch.")} for leaf in leaves]
        else:
            print(f"note: onnx: no decode-step graph ({meta['decode_step_skipped']}); decoding re-runs the forward graph", file=sys.stderr)
        (path / META).write_text(json.dumps(meta, indent=2) + "\n")

    def recognise(self, path: Path) -> bool:
        return (path / FORWARD).is_file() and (path / META).is_file()

    def load(self, path: Path, device: torch.device) -> OnnxRunner:
        return OnnxRunner(path)


class OnnxRunner(Runner):
    """Runs the artefact with onnxruntime (CPU); decodes with the decode-step graph when there
    is one, else by re-running the forward graph (the ``Runner`` default)."""

    def __init__(self, path: Path):
        import onnxruntime as ort

        try:
            self.meta = json.loads((path / META).read_text())
            self.max_len = int(self.meta["max_len"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CharLMError(f"{path}: not a charlm ONNX export (cannot read {META}: {exc})") from None
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        providers = ["CPUExecutionProvider"]
        self.forward = ort.InferenceSession(str(path / FORWARD), options, providers=providers)
        self.decode = None
        if self.meta.get("states") is not None:
            self.decode = ort.InferenceSession(str(path / DECODE), options, providers=providers)

    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.forward.run(None, {"idx": idx.cpu().numpy().astype(np.int64)})[0])

    def start(self, idx: torch.Tensor):
        if self.decode is None:
            return super().start(idx)
        batch = idx.shape[0]
        state = ([np.zeros((batch, *s["shape"]), dtype=s["dtype"]) for s in self.meta["states"]], 0)
        for t in range(idx.shape[1]):  # the prompt goes through the decode graph byte by byte
            logits, state = self.step(idx[:, t], state)
        return logits, state

    def step(self, token: torch.Tensor, state):
        if self.decode is None:
            return super().step(token, state)
        states, pos = state
        feed = {"token": token.view(-1, 1).cpu().numpy().astype(np.int64), "pos": np.array(pos, dtype=np.int64)}
        feed.update({f"state_{i}": s for i, s in enumerate(states)})
        logits, *states = self.decode.run(None, feed)
        return torch.from_numpy(logits), (states, pos + 1)


def onnx_exporter(options) -> OnnxExporter:
    """The ``onnx`` exporter's factory (it has no options)."""
    return OnnxExporter()
