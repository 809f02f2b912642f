"""Grouped-query causal self-attention on ``scaled_dot_product_attention``, with a KV cache.

``n_kv_head`` key/value heads are shared by ``n_head`` query heads (``n_kv_head == n_head`` is
multi-head attention, ``1`` is multi-query): a smaller cache and fewer projection FLOPs.
"""

import attrs
import torch
import torch.nn.functional as F
from torch import nn

import charlm
from charlm.errors import CharLMError
from charlm.model import init_residual_projection


@attrs.define
class GQAConfig:
    # RMS-normalise queries and keys per head (no gain): bounded logits, a higher stable LR
    qk_norm: bool = True


class KVCache:
    """Keys and values of the bytes seen so far, preallocated to ``capacity`` positions.

    ``length`` counts the bytes written; it is independent of the absolute position, so a
    window can start anywhere (rotary positions re-based by generation).
    """

    def __init__(self, batch: int, n_kv_head: int, capacity: int, head_dim: int, device, dtype):
        self.k = torch.zeros(batch, n_kv_head, capacity, head_dim, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)
        self.length = 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v [B, H_kv, T, D]; return every key and value so far."""
        start, end = self.length, self.length + k.shape[2]
        if end > self.k.shape[2]:
            raise CharLMError(
                f"KV cache full: {start} + {k.shape[2]} bytes > capacity {self.k.shape[2]};"
                " re-window the context (model.max_context) or init a larger state"
            )
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]


class GroupedQueryAttention(nn.Module):
    def __init__(self, model, positional, options: GQAConfig):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = model.n_head, model.kv_heads, model.head_dim
        self.qk_norm = options.qk_norm
        # A bound method is no submodule: the shared positional encoding (and a learned table)
        # stays out of this layer's state_dict.
        self.rotate = positional.rotate
        self.qkv = nn.Linear(model.d_model, (self.n_head + 2 * self.n_kv_head) * self.head_dim, bias=False)
        self.out = nn.Linear(self.n_head * self.head_dim, model.d_model, bias=False)
        nn.init.normal_(self.qkv.weight, std=model.init_std)
        init_residual_projection(self.out.weight, model)

    def forward(self, x: torch.Tensor, pos: int, cache: KVCache | None) -> tuple[torch.Tensor, KVCache | None]:
        batch, length, _ = x.shape
        q, k, v = self.qkv(x).split(
            [self.n_head * self.head_dim, self.n_kv_head * self.head_dim, self.n_kv_head * self.head_dim], dim=-1
        )
        q = q.view(batch, length, self.n_head, self.head_dim).transpose(1, 2)
        k = k.view(batch, length, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = v.view(batch, length, self.n_kv_head, self.head_dim).transpose(1, 2)
        if self.qk_norm:
            q, k = F.rms_norm(q, (self.head_dim,)), F.rms_norm(k, (self.head_dim,))
        q, k = self.rotate(q, k, pos)

        # training, or a prompt into an empty cache; bool(): a traced length stays exportable
        mask, is_causal = None, bool(length > 1)
        if cache is not None:
            past = cache.length
            k, v = cache.append(k, v)
            k, v = k.to(q.dtype), v.to(q.dtype)  # the cache may be kept in another dtype
            if past > 0:
                # is_causal would align the triangle to the top-left, but these queries come
                # after `past` cached keys: one query needs no mask, several need this one
                is_causal = False
                if length > 1:
                    mask = torch.ones(length, past + length, dtype=torch.bool, device=x.device).tril(diagonal=past)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=self.n_kv_head != self.n_head
        )
        y = y.transpose(1, 2).reshape(batch, length, self.n_head * self.head_dim)
        return self.out(y), cache

    def init_state(self, batch: int, max_len: int, device, dtype) -> KVCache:
        return KVCache(batch, self.n_kv_head, max_len, self.head_dim, device, dtype)


def gqa(options: GQAConfig, model, layer_index: int, positional, max_len: int) -> GroupedQueryAttention:
    return GroupedQueryAttention(model, positional, options)


@charlm.hookimpl
def register_attentions(register):
    register("gqa", gqa, config=GQAConfig, help="grouped-query causal attention (SDPA), KV cache, QK-norm")
