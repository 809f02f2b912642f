"""Sampling steps: ``greedy``, ``temperature``, ``top_k``, ``top_p``, ``min_p``.

A sampler is ``(logits[B, V], generator) -> logits[B, V] or tokens[B]``. Filters return
logits with the dropped entries at ``-inf``; a picker (``greedy``) returns tokens and ends
the chain. ``charlm.generate.SamplerChain`` runs them in order and, when no step picked,
draws from the softmax of what is left, so ``["top_k", "top_p"]`` is a complete sampler.

This module holds the options and the registration; the steps are in
``charlm.builtin.sampler_steps``, imported when one is built (this plugin imports no torch).
"""

import attrs

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


@charlm.hookimpl
def register_samplers(register):
    register("greedy", "charlm.builtin.sampler_steps:greedy", help="the most likely byte (ends a chain)")
    register("temperature", "charlm.builtin.sampler_steps:temperature", config=TemperatureConfig, help="divide the logits by a temperature")
    register("top_k", "charlm.builtin.sampler_steps:top_k", config=TopKConfig, help="keep the k most likely bytes")
    register("top_p", "charlm.builtin.sampler_steps:top_p", config=TopPConfig, help="keep the smallest set of bytes with mass >= p (nucleus)")
    register("min_p", "charlm.builtin.sampler_steps:min_p", config=MinPConfig, help="keep bytes at least p times as likely as the best one")
