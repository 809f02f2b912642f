"""The plugin contract: one hook per kind of component.

Each hook is called with a ``register`` function::

    register(name, factory, config=AttrsClass, help="one line")

``factory`` builds the component: a callable, or its import path ``"module:attr"``, which
is imported only when a component is built (keep the plugin module itself free of torch and
``charlm list-plugins`` / ``config validate`` stay fast; the signature of such a factory is
read from its source, see ``charlm.source_signature``). ``config`` is the attrs class that
the component's table in the job file is structured into (omit it for a component without
options). The hook names are public API; a ``register_*`` function of a plugin module that
is not one of them, or not marked ``@charlm.hookimpl``, is reported as never called.

The options contract, in brief (in full, with what each kind's factory is called with and
returns, in ``charlm/interfaces.py``):

- ``check(self, job)`` on the options class, optional: rules that span keys. It runs at
  ``config validate`` as at ``run``, and should not need torch (validate does not load it).
- A ``ValueError``/``TypeError`` from ``check`` or from the factory, and a factory whose
  signature does not bind the kind's context, are config errors naming the job's key (exit 2).
- An optimizer's parameter groups each carry ``base_lr``; the training loop sets
  ``lr = base_lr * schedule(step, progress)``.
"""

import pluggy

hookspec = pluggy.HookspecMarker("charlm")


@hookspec
def register_blocks(register):
    """Blocks: the layers a model stacks (``forward(x, pos, state) -> (y, state)``)."""


@hookspec
def register_attentions(register):
    """Attention mechanisms used inside blocks."""


@hookspec
def register_positional_encodings(register):
    """Positional encodings, acting on embeddings or on queries/keys."""


@hookspec
def register_mlps(register):
    """Feed-forward layers used inside blocks."""


@hookspec
def register_norms(register):
    """Normalisation layers."""


@hookspec
def register_samplers(register):
    """Sampling steps for generation: ``(logits[B, V], generator) -> logits or tokens``."""


@hookspec
def register_schedulers(register):
    """Learning-rate schedules: pure functions of training progress."""


@hookspec
def register_optimizers(register):
    """Optimizers, built from a model's parameter groups."""


@hookspec
def register_exporters(register):
    """Export formats: write an artefact and load it back for validation."""


@hookspec
def register_data_sources(register):
    """Named corpora that ``charlm data pull`` fetches into plain files."""
