"""Weight-only int8: symmetric per-output-channel (or per-group) scales for every Linear and Embedding.

A weight row ``w`` (one output channel, or one group of ``group_size`` input columns of it)
is stored as ``q = round(w / s)`` in int8 with ``s = max|w| / 127``, so each weight is off by
at most ``s / 2``. Activations, norms, biases and any other parameter stay in floating point.

A loaded model keeps the weights either int8 (``Int8Linear`` / ``Int8Embedding``: 4x less
memory) or expanded once to float (``expand_int8``: the float model, at its speed). An
int8-resident Linear with per-row scales reads its int8 weight directly in a CPU decode step
(``torch._weight_int8pack_mm``, bfloat16 activations); other inputs dequantise inside the
matmul. Measured on a 2-core CPU (bench/results/decode.md), that reading makes the 10.7M
shape decode 1.3-1.4x faster than float32, whose 43 MB of weights wait on memory, and the
micro model 0.8x (its weights stay in cache): ``charlm.artifact`` picks by size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

QMAX = 127  # symmetric: -128 is never used, so negating a weight is exact
# inputs of up to this many rows (decode steps) read an int8-resident weight as int8 on a CPU;
# longer ones (prefills) dequantise it, which is faster for them
PACKED_MAX_ROWS = 16
# that kernel (torch 2.13) reads the input width in vector-sized blocks with no tail: widths
# that are not a multiple of 16 crashed it here, so only multiples of 64 take it
PACKED_WIDTH_MULTIPLE = 64


def quantize(weight: torch.Tensor, group_size: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``weight`` [out, in] -> (int8 [out, in], float32 scales [out, in / group_size]).

    ``group_size`` 0 is one scale per output channel (row); otherwise it must divide ``in``.
    """
    out_features, in_features = weight.shape
    group = group_size or in_features
    if in_features % group:
        raise ValueError(f"group_size {group_size} does not divide the input width {in_features}")
    w = weight.detach().float().reshape(out_features, in_features // group, group)
    # an all-zero row (e.g. a zero-initialised projection never trained) gets scale 1, q = 0
    scale = (w.abs().amax(dim=-1) / QMAX).clamp_min(torch.finfo(torch.float32).tiny)
    scale = torch.where(w.abs().amax(dim=-1) > 0, scale, torch.ones_like(scale))
    q = torch.round(w / scale[..., None]).clamp(-QMAX, QMAX).to(torch.int8)
    return q.reshape(out_features, in_features), scale


def dequantize(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The float weight [out, in] that ``q`` and its scales [out, groups] stand for."""
    out_features, in_features = q.shape
    groups = scale.shape[1]
    w = q.to(dtype).reshape(out_features, groups, in_features // groups) * scale.to(dtype)[..., None]
    return w.reshape(out_features, in_features)


class Int8Linear(nn.Module):
    """A Linear whose weight stays int8 in memory, dequantised inside every call."""

    def __init__(self, in_features: int, out_features: int, bias: bool, group_size: int):
        super().__init__()
        groups = in_features // group_size if group_size else 1
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.int8))
        self.register_buffer("scale", torch.ones(out_features, groups))
        # the per-row scales as the CPU int8 kernel takes them: derived (not saved), set at load
        self.register_buffer("packed_scale", torch.ones(out_features, dtype=torch.bfloat16), persistent=False)
        self.register_load_state_dict_post_hook(_set_packed_scale)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    @property
    def weight(self) -> torch.Tensor:
        return dequantize(self.qweight, self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        if self.scale.shape[1] == 1:
            rows = x.numel() // self.in_features
            if x.device.type == "cpu" and rows <= PACKED_MAX_ROWS and self.in_features % PACKED_WIDTH_MULTIPLE == 0:
                # torch's CPU kernel for weight-only int8 takes bfloat16 activations (float32 ones
                # run a slow generic loop): activations and result pass through bfloat16 (W8A16)
                x16 = x.reshape(rows, self.in_features).to(torch.bfloat16)
                y = torch._weight_int8pack_mm(x16, self.qweight, self.packed_scale).to(x.dtype)
                y = y.view(*x.shape[:-1], self.out_features)
            else:
                # a per-row scale commutes with the matmul: scale the [..., out] result, not the weight
                y = F.linear(x, self.qweight.to(x.dtype)) * self.scale[:, 0].to(x.dtype)
            return y if bias is None else y + bias
        return F.linear(x, self.weight.to(x.dtype), bias)


def _set_packed_scale(layer: Int8Linear, incompatible_keys) -> None:
    if layer.scale.shape[1] == 1:
        layer.packed_scale.copy_(layer.scale[:, 0])


class Int8Embedding(nn.Module):
    """An embedding quantised per row: each byte's vector has its own scale (its output channel
    when the table doubles as a tied LM head, which reads ``weight``)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, group_size: int):
        super().__init__()
        groups = embedding_dim // group_size if group_size else 1
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.register_buffer("qweight", torch.zeros(num_embeddings, embedding_dim, dtype=torch.int8))
        self.register_buffer("scale", torch.ones(num_embeddings, groups))

    @property
    def weight(self) -> torch.Tensor:
        return dequantize(self.qweight, self.scale)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        rows = idx.reshape(-1)
        return dequantize(self.qweight[rows], self.scale[rows]).view(*idx.shape, self.embedding_dim)


def quantizable(model: nn.Module) -> list[str]:
    """Names of every Linear and Embedding in ``model``, in module order."""
    return [name for name, m in model.named_modules() if type(m) in (nn.Linear, nn.Embedding)]


def check_group_size(model: nn.Module, group_size: int) -> None:
    """Raise ``ValueError`` naming the first layer whose input width ``group_size`` does not divide."""
    if group_size < 0:
        raise ValueError(f"group_size must be >= 0 (0: one scale per output channel), got {group_size}")
    if not group_size:
        return
    for name in quantizable(model):
        module = model.get_submodule(name)
        width = module.in_features if isinstance(module, nn.Linear) else module.embedding_dim
        if width % group_size:
            raise ValueError(f"group_size {group_size} does not divide the input width {width} of {name}")


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, new)


def swap_in_int8(model: nn.Module, names: list[str], group_size: int) -> None:
    """Replace the named Linear/Embedding modules of ``model`` by empty int8 ones, in place."""
    for name in names:
        old = model.get_submodule(name)
        if isinstance(old, nn.Linear):
            new = Int8Linear(old.in_features, old.out_features, old.bias is not None, group_size)
        else:
            new = Int8Embedding(old.num_embeddings, old.embedding_dim, group_size)
        _replace(model, name, new.to(old.weight.device))


def expand_int8(model: nn.Module) -> None:
    """Replace every int8 module of ``model`` by a float one holding its dequantised weight, in place."""
    for name, module in list(model.named_modules()):
        if isinstance(module, Int8Linear):
            new = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
            if module.bias is not None:
                new.bias = module.bias
        elif isinstance(module, Int8Embedding):
            new = nn.Embedding(module.num_embeddings, module.embedding_dim)
        else:
            continue
        new.weight = nn.Parameter(module.weight, requires_grad=False)
        _replace(model, name, new)


def quantized_state_dict(model: nn.Module, group_size: int) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The state dict of ``model`` with every Linear/Embedding weight as ``qweight`` + ``scale``;
    also returns the quantised module names."""
    names = quantizable(model)
    state = {k: v.detach() for k, v in model.state_dict().items()}
    for name in names:
        q, scale = quantize(state.pop(f"{name}.weight"), group_size)
        state[f"{name}.qweight"], state[f"{name}.scale"] = q, scale
    return state, names
