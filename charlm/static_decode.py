"""A decode step of fixed shapes, compiled ahead of time: batch-1 decoding without Python per op.

A CPU decode step of a small model is overhead, not arithmetic: the micro model's matmuls
take about 0.2 ms of a 1.4 ms eager step (bench/results/decode.md). ``torch.compile`` of the
model's own step still pays dynamo's guards over the list of KV caches, dynamic shapes (the
cache grows) and a Python wrapper around each kernel. ``StaticDecodeStep`` is the same
model's step with every shape fixed: the KV caches are read at their full capacity behind a
mask, the position is a tensor, so ``torch.export`` captures one graph and AOTInductor
compiles it to a C++ program (its small matmuls as generated C++ kernels, not library calls).

It serves models of the built-in transformer blocks with ``gqa`` attention and rotary,
learned or no positional encoding (``static_step_support`` says why another model is not
served; its runner then uses ``torch.compile``). The step reads and writes the ``KVCache``
tensors that the model's own prefill filled, so prefill stays the model's forward.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from charlm.builtin.gqa import GroupedQueryAttention
from charlm.builtin.positional_encodings import LearnedAbsolute, NoPositional, Rotary, rotate_half_split
from charlm.builtin.transformer_block import TransformerBlock

# Inductor's own C++ GEMM kernels for the matmuls, without autotuning against the BLAS library
# (which costs seconds per shape): for one row they took 2-6 us where the library took 7-26.
INDUCTOR_OPTIONS = {"max_autotune": True, "max_autotune_gemm_backends": "CPP"}


def static_step_support(model: nn.Module, device: torch.device) -> str | None:
    """None when ``StaticDecodeStep`` can run ``model``; else why not."""
    if device.type != "cpu":
        return f"it runs on the CPU only, not {device.type}"
    if not isinstance(model.positional, (Rotary, LearnedAbsolute, NoPositional)):
        return f"positional encoding {type(model.positional).__name__} is not rotary, learned or none"
    for i, block in enumerate(model.blocks):
        if type(block) is not TransformerBlock or type(block.attn) is not GroupedQueryAttention:
            return f"block {i} is not a transformer block with gqa attention"
    if any(t.dtype != torch.float32 for t in model.state_dict().values()):
        return "it runs float32 weights only (an int8-resident model keeps int8 ones)"
    return None


class StaticDecodeStep(nn.Module):
    """``forward(token [B, 1], pos [] long, before, keys, values) -> (logits [B, 256], before')``.

    ``keys``/``values``: each block's ``KVCache.k``/``.v`` [B, H_kv, capacity, D], written at
    ``pos`` in place; ``before``: the n-gram state (the model's last state entry). ``pos`` is
    both the position (rotary or learned) and the cache slot, as in ``ModelRunner``, whose windows
    start at 0.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, token, pos, before, keys: list[torch.Tensor], values: list[torch.Tensor]):
        model = self.model
        x = model.embed(token)
        if model.ngram is not None:
            x = x + model.ngram(token, before)
            before = model.ngram.next_state(before, token)
        slot = pos.view(1)
        if isinstance(model.positional, LearnedAbsolute):
            x = x + model.positional.table.weight.index_select(0, slot)
        visible = torch.arange(keys[0].shape[2], device=token.device) <= pos  # the keys written so far
        for block, k_cache, v_cache in zip(model.blocks, keys, values):
            x = x + self._attend(block.attn, block.norm_attn(x), slot, visible, k_cache, v_cache)
            x = x + block.mlp(block.norm_mlp(x))
        return model.logits(x)[:, -1], before

    def _attend(self, attn: GroupedQueryAttention, x, slot, visible, k_cache, v_cache):
        """One query per sequence against the whole cache, the unwritten slots masked out."""
        batch = x.shape[0]
        q, k, v = attn.heads(x)
        if isinstance(self.model.positional, Rotary):
            cos, sin = self.model.positional.cos.index_select(0, slot), self.model.positional.sin.index_select(0, slot)
            q, k = rotate_half_split(q, cos, sin), rotate_half_split(k, cos, sin)
        k_cache.index_copy_(2, slot, k)
        v_cache.index_copy_(2, slot, v)
        # the query heads of one KV head side by side: [B, H_kv, group, D] against [B, H_kv, capacity, D]
        q = q.reshape(batch, attn.n_kv_head, attn.n_head // attn.n_kv_head, attn.head_dim)
        scores = (q @ k_cache.transpose(-1, -2)) * attn.head_dim**-0.5
        weights = scores.masked_fill(~visible, float("-inf")).softmax(dim=-1)
        y = (weights @ v_cache).reshape(batch, 1, attn.n_head * attn.head_dim)
        return attn.out(y)


class CompiledDecodeStep:
    """``StaticDecodeStep`` exported and compiled by AOTInductor for one batch size and cache
    capacity; called like the module. The program holds a copy of the weights as they were
    when it was built (a model trained further needs a new one); its package lives in a
    temporary directory."""

    def __init__(self, model: nn.Module, batch: int, capacity: int):
        states = model.init_states(batch, capacity, torch.device("cpu"), torch.float32)
        keys, values = [s.k for s in states[: len(model.blocks)]], [s.v for s in states[: len(model.blocks)]]
        self.no_ngram_state = torch.zeros(batch, 0, dtype=torch.long)  # ``before`` of a model without n-grams
        self.positions = [torch.tensor(pos) for pos in range(capacity)]  # ``pos`` of each step, made once
        before = states[-1] if model.ngram is not None else self.no_ngram_state
        example = (torch.zeros(batch, 1, dtype=torch.long), self.positions[0], before, keys, values)
        self._dir = tempfile.TemporaryDirectory(prefix="charlm-decode-")
        # torch's own deprecation warnings from inside export and inductor: nothing a user can act on
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.export(StaticDecodeStep(model).eval(), example)
            package = torch._inductor.aoti_compile_and_package(
                program, package_path=str(Path(self._dir.name) / "step.pt2"), inductor_configs=INDUCTOR_OPTIONS
            )
            # the loader itself, called with forward's arguments flattened in order, not the
            # package's callable: that one re-parses the input and output specs from JSON at
            # every call, about 40 % of a micro step
            self._run = torch._inductor.aoti_load_package(package).loader

    def __call__(self, token, pos, before, keys, values):
        # the program reads its inputs with the example's (contiguous) strides and does not check
        # them: the n-gram state from a prefill is a slice of a wider tensor
        logits, before = self._run.run([token.contiguous(), pos, before.contiguous(), *keys, *values])
        return logits, before
