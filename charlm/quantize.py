"""Weight-only int8: symmetric per-output-channel (or per-group) scales for every Linear and Embedding.

A weight row ``w`` (one output channel, or one group of ``group_size`` input columns of it)
is stored as ``q = round(w / s)`` in int8 with ``s = max|w| / 127``, so each weight is off by
at most ``s / 2``. Activations, norms, biases and any other parameter stay in floating point.

A loaded model keeps the weights either int8 (``Int8Linear`` / ``Int8Embedding``: 4x less
memory, dequantised inside every matmul) or expanded once to float (``expand_int8``: the
float model, at its speed). Measured on a 2-core CPU at the micro shape, a float32 GEMV beats
every int8 path torch offers there (``torch._weight_int8pack_mm`` was 4-8x slower than
dequantising, which is itself ~2x slower than float), so loading expands by default: at
this size int8 buys file size, not speed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

QMAX = 127  # symmetric: -128 is never used, so negating a weight is exact


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
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    @property
    def weight(self) -> torch.Tensor:
        return dequantize(self.qweight, self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        if self.scale.shape[1] == 1:
            # a per-row scale commutes with the matmul: scale the [..., out] result, not the weight
            y = F.linear(x, self.qweight.to(x.dtype)) * self.scale[:, 0].to(x.dtype)
            return y if bias is None else y + bias
        return F.linear(x, self.weight.to(x.dtype), bias)


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
