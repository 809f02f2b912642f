"""Grouped-query causal self-attention on ``scaled_dot_product_attention``, with a KV cache.

It applies every kind of positional encoding: rotation of q/k and a bias on the scores.
Registered as ``gqa`` by ``charlm.builtin.attention``, which holds its options.
"""

import torch
import torch.nn.functional as F
from torch import nn

from charlm.builtin.attention import GQAConfig
from charlm.errors import CharLMError
from charlm.model import init_residual_projection


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
    applies_bias = True  # adds the positional encoding's score bias (ALiBi)

    def __init__(self, model, positional, options: GQAConfig):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = model.n_head, model.kv_heads, model.head_dim
        self.qk_norm = options.qk_norm
        # Bound methods are no submodules: the shared positional encoding (and a learned table)
        # stays out of this layer's state_dict.
        self.rotate = positional.rotate
        self.score_bias = getattr(positional, "bias", None)
        self.qkv = nn.Linear(model.d_model, (self.n_head + 2 * self.n_kv_head) * self.head_dim, bias=False)
        self.out = nn.Linear(self.n_head * self.head_dim, model.d_model, bias=False)
        nn.init.normal_(self.qkv.weight, std=model.init_std)
        init_residual_projection(self.out.weight, model)

    def forward(self, x: torch.Tensor, pos: int, cache: KVCache | None) -> tuple[torch.Tensor, KVCache | None]:
        batch, length, _ = x.shape
        q, k, v = self.heads(x)
        q, k = self.rotate(q, k, pos)

        past = 0
        if cache is not None:
            past = cache.length
            k, v = cache.append(k, v)
            if k.dtype != q.dtype:  # the cache may be kept in another dtype
                k, v = k.to(q.dtype), v.to(q.dtype)
        bias = None if self.score_bias is None else self.score_bias(length, past + length, past, x.device)
        if bias is None and past == 0:
            # training, or a prompt into an empty cache; bool(): a traced length stays exportable
            mask, is_causal = None, bool(length > 1)
        else:
            mask, is_causal = _causal_mask(length, past, bias, q.dtype, x.device), False
        y = _attend(q, k, v, mask, is_causal, enable_gqa=self.n_kv_head != self.n_head)
        y = y.transpose(1, 2).reshape(batch, length, self.n_head * self.head_dim)
        return self.out(y), cache

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values [B, H, T, D] of ``x`` [B, T, d_model], not yet rotated."""
        batch, length, _ = x.shape
        qk_heads = self.n_head + self.n_kv_head
        qkv = self.qkv(x).view(batch, length, qk_heads + self.n_kv_head, self.head_dim)
        qk, v = qkv[:, :, :qk_heads], qkv[:, :, qk_heads:]
        if self.qk_norm:  # queries and keys in one call: a decode step is a few small ops per layer
            qk = F.rms_norm(qk, (self.head_dim,))
        q, k = qk.split([self.n_head, self.n_kv_head], dim=2)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def init_state(self, batch: int, max_len: int, device, dtype) -> KVCache:
        return KVCache(batch, self.n_kv_head, max_len, self.head_dim, device, dtype)


def _attend(q, k, v, mask, is_causal: bool, enable_gqa: bool) -> torch.Tensor:
    """``scaled_dot_product_attention``, in float32 under CPU autocast: autocast would run it
    in bfloat16, whose CPU backward is about 3.5x slower than float32's here (torch 2.13,
    bench/results/train_profile.md), and its matmuls are a small part of a step."""
    if q.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):
            mask = mask if mask is None or mask.dtype == torch.bool else mask.float()
            return _attend(q.float(), k.float(), v.float(), mask, is_causal, enable_gqa)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=enable_gqa)


def _causal_mask(length: int, past: int, bias: torch.Tensor | None, dtype, device) -> torch.Tensor | None:
    """The ``attn_mask`` for ``length`` queries after ``past`` cached keys.

    is_causal would align the triangle to the top-left, and SDPA takes it or a mask, not both:
    the triangle starts after the cached keys and, with a score bias, is the bias's -inf part.
    """
    if bias is None and length == 1:
        return None  # one query sees every key so far
    allowed = torch.ones(length, past + length, dtype=torch.bool, device=device).tril(diagonal=past)
    if bias is None:
        return allowed
    return bias.to(dtype).masked_fill(~allowed, float("-inf"))


def gqa(options: GQAConfig, model, layer_index: int, positional, max_len: int) -> GroupedQueryAttention:
    return GroupedQueryAttention(model, positional, options)
