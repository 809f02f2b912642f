"""Positional encodings: rotary (on queries and keys), learned absolute (on the embeddings),
ALiBi (a bias on the attention scores), none.

This module holds the options and the registration; the encodings are in
``charlm.builtin.positional_encodings``, imported when one is built (this plugin imports no torch).
"""

import attrs

import charlm
from charlm.validators import positive


@attrs.define
class RopeConfig:
    theta: float = attrs.field(default=10000.0, validator=positive)

    def check(self, job) -> None:
        head_dim = job.model.d_model // job.model.n_head
        if head_dim % 2:
            raise ValueError(
                f"rope rotates pairs of channels and needs an even head dim, got d_model / n_head ="
                f" {job.model.d_model} / {job.model.n_head} = {head_dim}"
            )


@charlm.hookimpl
def register_positional_encodings(register):
    register("rope", "charlm.builtin.positional_encodings:rope", config=RopeConfig, help="rotary embeddings on queries and keys (any position)")
    register("learned", "charlm.builtin.positional_encodings:learned", help="learned absolute positions added to the embeddings")
    register("alibi", "charlm.builtin.positional_encodings:alibi", help="linear biases on the attention scores by distance (ALiBi; any length)")
    register("none", "charlm.builtin.positional_encodings:none", help="no positional encoding (NoPE)")
