"""The transformer block (``transformer``): pre-norm attention and MLP, each added to the
residual stream. Its attention, MLP and norms are components too, named by the model config
(``model.attention``, ``model.mlp``, ``model.norm``), so it has no options of its own.

The block is in ``charlm.builtin.transformer_block``, imported when one is built (this
plugin imports no torch).
"""

import charlm


@charlm.hookimpl
def register_blocks(register):
    register(
        "transformer",
        "charlm.builtin.transformer_block:transformer",
        help="pre-norm attention + MLP (model.attention, model.mlp, model.norm)",
    )
