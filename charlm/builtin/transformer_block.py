"""The transformer block: pre-norm attention and MLP, each added to the residual stream
(registered as ``transformer`` by ``charlm.builtin.transformer``).

Its attention, MLP and norms are components too, named by the model config
(``model.attention``, ``model.mlp``, ``model.norm``). The attention component follows the
block's own calling convention: ``forward(x, pos, state) -> (y, state)`` and ``init_state``;
its state (a KV cache for ``gqa``) is this block's state.
"""

import torch
from torch import nn

from charlm import ConfigError, get_registry


class TransformerBlock(nn.Module):
    def __init__(self, model, layer_index: int, positional, max_len: int):
        super().__init__()
        registry = get_registry()
        self.norm_attn = registry.create("norm", model.norm, dim=model.d_model)
        self.attn = registry.create(
            "attention", model.attention, model=model, layer_index=layer_index, positional=positional, max_len=max_len
        )
        if hasattr(positional, "bias") and not getattr(self.attn, "applies_bias", False):
            raise ConfigError(
                f"model.positional: {model.positional.kind!r} adds a bias to the attention scores, which attention"
                f" {model.attention.kind!r} does not apply (it declares no applies_bias); use attention \"gqa\""
                " or another positional encoding"
            )
        self.norm_mlp = registry.create("norm", model.norm, dim=model.d_model)
        self.mlp = registry.create("mlp", model.mlp, model=model)
        self.d_attn = model.n_head * model.head_dim
        # the KV cache grows with the sequence: generation re-windows at the trained context
        self.max_context = max_len

    def forward(self, x: torch.Tensor, pos: int, state):
        a, state = self.attn(self.norm_attn(x), pos, state)
        x = x + a
        x = x + self.mlp(self.norm_mlp(x))
        return x, state

    def init_state(self, batch: int, max_len: int, device, dtype):
        return self.attn.init_state(batch, max_len, device, dtype)

    def no_weight_decay(self) -> set[str]:
        return {name for name, p in self.named_parameters() if p.ndim < 2}  # norm gains and biases

    def flops_per_token(self, seq_len: int) -> float:
        """Forward FLOPs beyond the parameter matmuls: scores q.k and the weighted sum of v."""
        return 2 * 2 * self.d_attn * seq_len


def transformer(options, model, layer_index: int, positional, max_len: int) -> TransformerBlock:
    return TransformerBlock(model, layer_index, positional, max_len)
