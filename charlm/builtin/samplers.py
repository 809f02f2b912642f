"""Sampling steps: ``greedy``, ``temperature``, ``top_k``, ``top_p``, ``min_p``.

A sampler is ``(logits[B, V], generator) -> logits[B, V] or tokens[B]``. Filters return
logits with the dropped entries at ``-inf``; a picker (``greedy``) returns tokens and ends
the chain. ``charlm.generate.SamplerChain`` runs them in order and, when no step picked,
draws from the softmax of what is left, so ``["top_k", "top_p"]`` is a complete sampler.
"""

import attrs
import torch

import charlm
from charlm.validators import in_range, positive


@attrs.define
class TemperatureConfig:
    value: float = attrs.field(default=1.0, validator=positive)


@attrs.define
class TopKConfig:
    k: int = attrs.field(default=50, validator=positive)


@attrs.define
class TopPConfig:
    p: float = attrs.field(default=0.9, validator=in_range(0.0, 1.0, low_open=True))


@attrs.define
class MinPConfig:
    p: float = attrs.field(default=0.05, validator=in_range(0.0, 1.0))


def greedy(cfg=None):
    def step(logits, generator):
        return logits.argmax(dim=-1)

    return step


def temperature(cfg: TemperatureConfig):
    def step(logits, generator):
        return logits / cfg.value

    return step


def top_k(cfg: TopKConfig):
    """Keep the k largest logits (ties at the k-th value are kept too)."""

    def step(logits, generator):
        k = min(cfg.k, logits.size(-1))
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]
        return logits.masked_fill(logits < kth, float("-inf"))

    return step


def top_p(cfg: TopPConfig):
    """Keep the smallest set of most likely tokens whose probability mass reaches p."""

    def step(logits, generator):
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits.float(), dim=-1)
        mass_before = torch.cumsum(probs, dim=-1) - probs
        # A token is dropped when the more likely ones already reach p; the top one never is.
        drop_sorted = mass_before >= cfg.p
        drop_sorted[..., 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        return logits.masked_fill(drop, float("-inf"))

    return step


def min_p(cfg: MinPConfig):
    """Keep the tokens at least p times as likely as the most likely one."""

    def step(logits, generator):
        probs = torch.softmax(logits.float(), dim=-1)
        threshold = cfg.p * probs.max(dim=-1, keepdim=True).values
        return logits.masked_fill(probs < threshold, float("-inf"))

    return step


@charlm.hookimpl
def register_samplers(register):
    register("greedy", greedy, help="the most likely byte (ends a chain)")
    register("temperature", temperature, config=TemperatureConfig, help="divide the logits by a temperature")
    register("top_k", top_k, config=TopKConfig, help="keep the k most likely bytes")
    register("top_p", top_p, config=TopPConfig, help="keep the smallest set of bytes with mass >= p (nucleus)")
    register("min_p", min_p, config=MinPConfig, help="keep bytes at least p times as likely as the best one")
