"""The built-in ``Runner``s, and the adapter through which ``evaluate_bpb`` scores any of them.

- ``ModelRunner``: a ``ByteLM`` (from a checkpoint, or an artefact that loads into one) that
  decodes with its blocks' own states;
- ``SequenceRunner``: any full-sequence forward (a traced or exported program) that decodes
  by re-running the window, as a deployed program without state would;
- ``RunnerModule``: a runner in the shape of the model's training-time forward.
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from charlm.interfaces import Runner
from charlm.static_decode import CompiledDecodeStep, static_step_support


class ModelRunner(Runner):
    """A ``ByteLM`` in eval mode; ``start`` allocates states for the trained context."""

    def __init__(self, model: nn.Module, job=None):
        self.model = model.eval()
        self.job = job
        self.max_len = model.max_len
        # the first float tensor: an int8-resident model starts with int8 weights (charlm.quantize)
        weight = next(t for t in model.state_dict().values() if t.is_floating_point())
        self.device, self.dtype = weight.device, weight.dtype
        self.decode = model  # or its torch.compile'd copy: see compile()
        self.static_steps: dict[int, CompiledDecodeStep | None] | None = None  # per batch size, once compiled

    @property
    def max_context(self) -> int | None:
        return self.model.max_context

    @torch.inference_mode()
    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(idx.to(self.device))[0]

    @torch.inference_mode()
    def start(self, idx: torch.Tensor):
        if self.static_steps is not None:  # build the compiled step before the first byte, not between bytes
            self._compiled_step(idx.shape[0])
        states = self.model.init_states(idx.shape[0], self.max_len, self.device, self.dtype)
        logits, states = self.model(idx.to(self.device), 0, states)
        return logits[:, -1], (states, idx.shape[1])

    @torch.inference_mode()
    def step(self, token: torch.Tensor, state):
        states, pos = state
        compiled = self._compiled_step(token.shape[0]) if self.static_steps is not None else None
        if compiled is not None and pos < self.max_len and states[0].length == pos:
            return self._step_compiled(compiled, token, states, pos)
        logits, states = self.decode(token.view(-1, 1).to(self.device), pos, states)
        return logits[:, -1], (states, pos + 1)

    def compile(self) -> None:
        """Compile the one-byte step (prefills vary in length and run once per window): ahead of
        time where ``StaticDecodeStep`` runs the model (charlm.static_decode), else with
        ``torch.compile``."""
        if self.decode is not self.model or self.static_steps is not None:
            return
        if static_step_support(self.model, self.device) is None:
            self.static_steps = {}
        else:
            self.decode = torch.compile(self.model, dynamic=True)

    def _compiled_step(self, batch: int) -> CompiledDecodeStep | None:
        """The compiled static step for ``batch`` sequences: built at the first step of that
        batch size; None (eager steps) where building it failed."""
        if batch not in self.static_steps:
            try:
                self.static_steps[batch] = CompiledDecodeStep(self.model, batch, self.max_len)
            except Exception as e:  # no C++ compiler, an op AOTInductor lacks: decode eagerly
                reason = (str(e).strip().splitlines() or [""])[0][:200]  # a compiler's error runs to pages
                print(
                    f"warning: compiling the decode step failed ({type(e).__name__}: {reason}); decoding without it",
                    file=sys.stderr,
                )
                self.static_steps[batch] = None
        return self.static_steps[batch]

    def _step_compiled(self, compiled: CompiledDecodeStep, token: torch.Tensor, states: list, pos: int):
        blocks = len(self.model.blocks)
        caches = states[:blocks]
        before = states[-1] if self.model.ngram is not None else compiled.no_ngram_state
        logits, before = compiled(token.view(-1, 1), compiled.positions[pos], before, [c.k for c in caches], [c.v for c in caches])
        for cache in caches:
            cache.length += 1
        return logits, (caches + [before] if self.model.ngram is not None else caches, pos + 1)


class SequenceRunner(Runner):
    """A full-sequence forward ``idx [B, T] -> logits [B, T, 256]``; decoding (the base class's
    ``start``/``step``) re-runs the whole window at every byte."""

    def __init__(self, forward, max_len: int, device: torch.device | None = None):
        self.forward = forward
        self.max_len = max_len
        self.device = device if device is not None else torch.device("cpu")

    @torch.inference_mode()
    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        return self.forward(idx.to(self.device))


class RunnerModule(nn.Module):
    """``forward(idx, pos, states) -> (logits, None)`` over a runner: what ``evaluate_bpb`` calls.

    It scores only full windows from position 0, so every runner's ``logits`` serves.
    """

    def __init__(self, runner: Runner):
        super().__init__()
        self.runner = runner

    def forward(self, idx: torch.Tensor, pos: int = 0, states=None):
        return self.runner.logits(idx).to(idx.device), None
