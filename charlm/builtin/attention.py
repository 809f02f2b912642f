"""Grouped-query causal self-attention (``gqa``): its options and registration.

``n_kv_head`` key/value heads are shared by ``n_head`` query heads (``n_kv_head == n_head`` is
multi-head attention, ``1`` is multi-query): a smaller cache and fewer projection FLOPs.
The layer and its KV cache are in ``charlm.builtin.gqa``, imported when one is built (this
plugin imports no torch).
"""

import attrs

import charlm


@attrs.define
class GQAConfig:
    # RMS-normalise queries and keys per head (no gain): bounded logits, a higher stable LR
    qk_norm: bool = True


@charlm.hookimpl
def register_attentions(register):
    register("gqa", "charlm.builtin.gqa:gqa", config=GQAConfig, help="grouped-query causal attention (SDPA), KV cache, QK-norm")
