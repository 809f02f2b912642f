"""What each kind of component provides, and what its factory is called with.

Every factory is called as ``factory(options, **context)``: ``options`` is the instance of
the attrs class given to ``register(..., config=...)`` (``None`` when there is none) and
``context`` depends on the kind:

| kind        | context                                   | returns                         |
|-------------|-------------------------------------------|---------------------------------|
| block       | model, layer_index, positional, max_len   | ``Block`` (an ``nn.Module``)    |
| attention   | model, layer_index, positional, max_len   | ``nn.Module``                   |
| positional  | model, max_len                            | ``PositionalEncoding``          |
| mlp         | model                                     | ``nn.Module`` (d_model -> d_model) |
| norm        | dim                                       | ``nn.Module``                   |
| sampler     | (none)                                    | ``Sampler``                     |
| scheduler   | (none)                                    | ``Scheduler``                   |
| optimizer   | model                                     | ``torch.optim.Optimizer``-like  |
| exporter    | (none)                                    | ``Exporter``                    |
| data_source | (none)                                    | ``DataSource``                  |

``model`` is the job's ``ModelConfig`` (for an optimizer: the ``nn.Module`` to train, whose
``no_weight_decay()`` names the parameters never to decay); ``max_len`` is the context the model is trained at
(the job's ``seq_len``); ``positional`` is the model's one shared positional encoding.
``charlm config validate`` (and ``charlm run``, before it builds anything) checks that each
of the job's factories can be called with exactly this context: a factory whose signature
does not bind is ``config error: <key>: factory <name> cannot be called with (...)``.

The options contract, the same for every kind:

- Options are read from the component's table (``[model.positional]``) strictly into
  the attrs class: unknown keys, wrong types and non-finite numbers are config errors
  naming the dotted key. An attrs validator raises ``ValueError`` with a
  message that leaves out the key (``must be > 0, got 0``); the loader prefixes it.
- ``check(self, job)``, optional: rules that span keys (``job`` is the ``JobConfig``).
  It runs for every component of the job, at ``charlm config validate`` as at
  ``charlm run``; a ``ValueError`` or ``TypeError`` it raises becomes
  ``config error: <dotted key>: <message>`` (exit 2); ``charlm.config.check_options(spec,
  job)`` runs it for a component used outside the job file. Put such rules here, not in the
  factory, so that ``config validate`` finds them without building the model.
- A factory that still refuses its options with ``ValueError``/``TypeError`` when it is
  called gets the same treatment (``Registry.create`` names the component's key).

An optimizer's parameter groups must each carry ``base_lr``: the training loop sets
``lr = base_lr * schedule(step, progress)`` on every step (``charlm/builtin/optimizers.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class Block(Protocol):
    """One layer of the stack. It owns its parameters' init and its incremental state.

    ``state`` is ``None`` in training (no state is built) and otherwise whatever
    ``init_state`` returned (batch-first tensors); the model never looks inside it.
    ``pos`` is the absolute position of ``x[:, 0]``.
    """

    max_context: int | None  # None: the state does not grow with the sequence

    def forward(self, x: torch.Tensor, pos: int, state: Any) -> tuple[torch.Tensor, Any]: ...

    def init_state(self, batch: int, max_len: int, device: torch.device, dtype: torch.dtype) -> Any: ...

    def no_weight_decay(self) -> set[str]:
        """Names (relative to the block) of parameters that must not be weight-decayed."""
        ...


class PositionalEncoding(Protocol):
    """Acts on the embeddings (absolute) and/or on queries and keys (rotary)."""

    def embed(self, x: torch.Tensor, pos: int) -> torch.Tensor: ...

    def rotate(self, q: torch.Tensor, k: torch.Tensor, pos: int) -> tuple[torch.Tensor, torch.Tensor]: ...


class Sampler(Protocol):
    """One step of a sampling chain: transforms logits[B, V], or (last in a chain) picks tokens[B]."""

    def __call__(self, logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor: ...


class Scheduler(Protocol):
    """The learning-rate multiplier as a pure function of the step and of progress in [0, 1]."""

    def __call__(self, step: int, progress: float) -> float: ...


class Exporter(Protocol):
    """An artefact format (``charlm export --format NAME``). The driver (``charlm.export``)
    calls ``export`` on a temporary path beside the destination, renames it into place, then
    ``load``s it and validates the runner against the source model."""

    suffix: str  # the usual file suffix (".int8", ".pt2")
    exact: bool  # True: gated on max |logit diff|; False (lossy: int8, bf16): on bpb delta, KL, top-1

    def export(self, model: torch.nn.Module, job: Any, path: Path) -> None:
        """Write ``model`` (a ``ByteLM`` on CPU, eval mode) trained by ``job`` (its ``JobConfig``)."""
        ...

    def load(self, path: Path, device: torch.device) -> "Runner":
        """Read ``path`` back, as the format's users would (``charlm.export.ModelRunner`` wraps a
        ``ByteLM``, ``charlm.export.SequenceRunner`` any full-sequence forward)."""
        ...


class Runner(Protocol):
    """A loaded artefact, as validation runs it. Bytes are int64 [B, T] from position 0;
    ``start``/``step`` decode one sequence (B = 1), with whatever cache the format has."""

    max_len: int  # the trained context: validation never feeds more

    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        """float logits [B, T, 256] on CPU."""
        ...

    def start(self, idx: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """Encode ``idx`` [1, T]: the next byte's logits [1, 256] and a state to continue from."""
        ...

    def step(self, token: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """Append ``token`` [1]: the next byte's logits [1, 256] and the new state."""
        ...


class DataSource(Protocol):
    """A named corpus. ``charlm data pull NAME --out DIR`` calls ``fetch(DIR / "raw")``, then
    packs the returned files as ``charlm data prepare`` does (a file is one document; a
    ``.jsonl`` file one per record) and records ``provenance()`` in ``DIR/meta.json``."""

    def fetch(self, dest: Path) -> list[Path]:
        """Download and verify the corpus into ``dest``, reusing a verified copy an earlier
        fetch left there; return its documents as files, in their fixed order. A failure
        raises ``CharLMError`` saying what failed and what to do, and leaves no partial file."""
        ...

    def provenance(self) -> dict:
        """Where the corpus comes from (URL, digest, ...), as plain JSON values."""
        ...
