"""Grouped-query attention against a plain multi-head reference written out here."""

import math

import pytest
import torch

from charlm.config import config_from_dict
from charlm.registry import get_registry


def build_attention(n_kv_head, qk_norm=False, d_model=32, n_head=4, positional="none"):
    raw = {
        "model": {
            "d_model": d_model,
            "n_head": n_head,
            "n_kv_head": n_kv_head,
            "positional": positional,
            "attention": {"kind": "gqa", "qk_norm": qk_norm},
        },
        "data": {"train": "x.bin"},
        "max_steps": 1,
    }
    cfg = config_from_dict(raw).model
    registry = get_registry()
    positional = registry.create("positional", cfg.positional, model=cfg, max_len=32)
    torch.manual_seed(0)
    attention = registry.create("attention", cfg.attention, model=cfg, layer_index=0, positional=positional, max_len=32)
    with torch.no_grad():
        attention.out.weight.normal_(std=0.1)  # zero-initialised: make it count
    return attention


def reference_attention(x, qkv_weight, out_weight, n_head, n_kv_head, qk_norm=False, slopes=None):
    """Causal softmax attention, head by head; key/value head h // group serves query head h.
    With ``slopes``, head h adds -slopes[h] * (i - j) to the score of query i for key j (ALiBi)."""
    batch, length, d_model = x.shape
    head_dim = d_model // n_head
    q, k, v = (x @ qkv_weight.t()).split([n_head * head_dim, n_kv_head * head_dim, n_kv_head * head_dim], dim=-1)
    group = n_head // n_kv_head
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    heads = []
    for h in range(n_head):
        qh = q[..., h * head_dim : (h + 1) * head_dim]
        kh = k[..., (h // group) * head_dim : (h // group + 1) * head_dim]
        vh = v[..., (h // group) * head_dim : (h // group + 1) * head_dim]
        if qk_norm:
            qh = qh / qh.pow(2).mean(-1, keepdim=True).sqrt()
            kh = kh / kh.pow(2).mean(-1, keepdim=True).sqrt()
        scores = (qh @ kh.transpose(1, 2)) / math.sqrt(head_dim)
        if slopes is not None:
            distance = torch.arange(length)[:, None] - torch.arange(length)[None, :]
            scores = scores - slopes[h] * distance
        weights = scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)
        heads.append(weights @ vh)
    return torch.cat(heads, dim=-1) @ out_weight.t()


def test_gqa_with_as_many_kv_heads_as_heads_is_plain_multi_head_attention():
    attention = build_attention(n_kv_head=4)
    x = torch.randn(2, 10, 32)
    with torch.no_grad():
        y, state = attention(x, 0, None)
        expected = reference_attention(x, attention.qkv.weight, attention.out.weight, 4, 4)
    assert state is None
    assert (y - expected).abs().max() < 1e-5


@pytest.mark.parametrize("n_kv_head", [1, 2])
def test_gqa_shares_each_kv_head_across_its_group(n_kv_head):
    attention = build_attention(n_kv_head=n_kv_head, qk_norm=True)
    x = torch.randn(2, 10, 32)
    with torch.no_grad():
        y, _ = attention(x, 0, None)
        expected = reference_attention(x, attention.qkv.weight, attention.out.weight, 4, n_kv_head, qk_norm=True)
    assert (y - expected).abs().max() < 1e-4


def test_several_queries_against_a_cache_are_masked_from_their_own_start():
    attention = build_attention(n_kv_head=2)
    x = torch.randn(1, 9, 32)
    with torch.no_grad():
        full, _ = attention(x, 0, None)
        cache = attention.init_state(1, 16, "cpu", torch.float32)
        first, cache = attention(x[:, :4], 0, cache)
        rest, cache = attention(x[:, 4:], 4, cache)
    assert cache.length == 9
    assert (torch.cat([first, rest], dim=1) - full).abs().max() < 1e-5


@pytest.mark.parametrize("n_kv_head", [1, 4])
def test_gqa_adds_the_alibi_bias_in_training_prefill_and_decode(n_kv_head):
    attention = build_attention(n_kv_head=n_kv_head, positional="alibi")
    slopes = [2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8]  # 4 heads
    x = torch.randn(2, 9, 32)
    with torch.no_grad():
        full, _ = attention(x, 0, None)
        expected = reference_attention(x, attention.qkv.weight, attention.out.weight, 4, n_kv_head, slopes=slopes)
        cache = attention.init_state(2, 16, "cpu", torch.float32)
        prefill, cache = attention(x[:, :5], 0, cache)
        steps = []
        for t in range(5, 9):
            y, cache = attention(x[:, t : t + 1], t, cache)
            steps.append(y)
    assert (full - expected).abs().max() < 1e-5
    assert (torch.cat([prefill, *steps], dim=1) - expected).abs().max() < 1e-5


@pytest.mark.parametrize("positional", ["none", "alibi"])
def test_attention_under_cpu_bf16_autocast_trains_and_decodes_like_float32(positional):
    # under CPU autocast the scores and weighted sum run in float32 (bf16's backward is slow there),
    # with the projections in bfloat16: outputs and input gradients stay within bf16 rounding
    attention = build_attention(n_kv_head=2, positional=positional)
    x = torch.randn(2, 9, 32, requires_grad=True)
    y32, _ = attention(x, 0, None)
    (grad32,) = torch.autograd.grad(y32.square().sum(), x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y16, _ = attention(x, 0, None)
        (grad16,) = torch.autograd.grad(y16.float().square().sum(), x)
        with torch.no_grad():
            cache = attention.init_state(2, 16, "cpu", torch.bfloat16)
            prefill, cache = attention(x[:, :5], 0, cache)
            steps = [attention(x[:, t : t + 1], t, cache)[0] for t in range(5, 9)]
    decoded = torch.cat([prefill, *steps], dim=1)
    assert y16.dtype == torch.bfloat16
    assert (y16.float() - y32).abs().max() < 0.02 * y32.abs().max()
    assert (grad16 - grad32).abs().max() < 0.02 * grad32.abs().max()
    assert (decoded.float() - y32).abs().max() < 0.02 * y32.abs().max()
