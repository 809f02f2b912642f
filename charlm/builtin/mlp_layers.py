"""The feed-forward layers registered by ``charlm.builtin.mlp`` (their options are there)."""

import torch
import torch.nn.functional as F
from torch import nn

from charlm.builtin.mlp import MLPConfig
from charlm.model import init_residual_projection


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, hidden: int, model):
        super().__init__()
        self.gate_up = nn.Linear(d_model, 2 * hidden, bias=False)  # one matmul for both halves
        self.down = nn.Linear(hidden, d_model, bias=False)
        nn.init.normal_(self.gate_up.weight, std=model.init_std)
        init_residual_projection(self.down.weight, model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Pointwise(nn.Module):
    """up -> activation -> down."""

    def __init__(self, d_model: int, hidden: int, activation, model):
        super().__init__()
        self.up = nn.Linear(d_model, hidden, bias=False)
        self.down = nn.Linear(hidden, d_model, bias=False)
        self.activation = activation
        nn.init.normal_(self.up.weight, std=model.init_std)
        init_residual_projection(self.down.weight, model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.activation(self.up(x)))


def _relu_squared(x: torch.Tensor) -> torch.Tensor:
    return F.relu(x).square()


def swiglu(options: MLPConfig, model) -> SwiGLU:
    # 8/3 * d_model keeps the parameter count of a 4x MLP; rounded up to a multiple of 32
    hidden = options.hidden or 32 * -(-8 * model.d_model // (3 * 32))
    return SwiGLU(model.d_model, hidden, model)


def relu2(options: MLPConfig, model) -> Pointwise:
    return Pointwise(model.d_model, options.hidden or 4 * model.d_model, _relu_squared, model)


def gelu(options: MLPConfig, model) -> Pointwise:
    return Pointwise(model.d_model, options.hidden or 4 * model.d_model, F.gelu, model)
