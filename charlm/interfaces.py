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
``lr = base_lr * schedule(step, progress)`` on every step (``charlm/builtin/torch_optimizers.py``).
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
    """Acts on the embeddings (absolute), on queries and keys (rotary) and/or on the
    attention scores (ALiBi), through an optional method:

    ``bias(q_len, k_len, offset, device) -> Tensor | None``: an additive bias on the scores,
    broadcastable to [B, H, q_len, k_len], for queries at key indices ``offset`` ..
    ``offset + q_len - 1`` (``offset``: the keys already cached). Only entries at or below
    that diagonal count: the attention adds causality itself.

    An attention applies ``bias`` when it declares ``applies_bias = True`` (the built-in
    ``gqa`` does). A positional encoding with ``bias`` and an attention without it is a
    config error (``model.positional: ...``), never a silently ignored bias; a block that
    builds its own attention applies ``bias`` or raises ``ConfigError`` the same way.
    """

    def embed(self, x: torch.Tensor, pos: int) -> torch.Tensor: ...

    def rotate(self, q: torch.Tensor, k: torch.Tensor, pos: int) -> tuple[torch.Tensor, torch.Tensor]: ...


class Sampler(Protocol):
    """One step of a sampling chain: transforms logits[B, V], or (last in a chain) picks tokens[B].

    Users choose a chain with ``charlm generate --sampler KIND[:key=value,...]`` (repeatable,
    in order) or ``lm.generate(sampler=["top_k:k=40", {"kind": "top_p", "p": 0.9}])``; the
    options are structured into the sampler's attrs class as a job file's would be.
    """

    def __call__(self, logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor: ...


class Scheduler(Protocol):
    """The learning-rate multiplier as a pure function of the step and of progress in [0, 1]."""

    def __call__(self, step: int, progress: float) -> float: ...


class Exporter(Protocol):
    """An artefact format (``charlm export --format NAME``). The driver (``charlm.export``)
    calls ``export`` on a temporary path beside the destination, renames it into place, then
    ``load``s it and validates the runner against the source model.

    Every artefact is also accepted wherever a checkpoint is (``charlm eval/generate
    --checkpoint ARTEFACT``, ``charlm.load``): ``charlm.loading`` builds each exporter with its
    default options, asks ``recognise``, and runs the artefact through the ``Runner`` that
    ``load`` returns. So ``recognise`` and ``load`` must not depend on the options.
    """

    suffix: str  # the usual file suffix (".int8", ".pt2")
    exact: bool  # True: gated on max |logit diff|; False (lossy: int8, bf16): on bpb delta, KL, top-1

    def export(self, model: torch.nn.Module, job: Any, path: Path) -> None:
        """Write ``model`` (a ``ByteLM`` on CPU, eval mode) trained by ``job`` (its ``JobConfig``)."""
        ...

    def recognise(self, path: Path) -> bool:
        """Whether ``path`` (a file or a directory, any name) is an artefact this format wrote.
        Decide by content (a header, a marker file), cheaply, and never raise."""
        ...

    def load(self, path: Path, device: torch.device) -> Runner:
        """Read ``path`` back, as the format's users would: a ``Runner`` (``charlm.runners.ModelRunner``
        wraps a ``ByteLM``, ``charlm.runners.SequenceRunner`` any full-sequence forward)."""
        ...


class Runner:
    """A loaded model, as ``charlm generate``, ``charlm eval`` and export validation run it: a
    checkpoint's ``ByteLM`` or any exporter's artefact. Subclass it.

    Bytes are int64 [B, T] (on any device) with the first at position 0; logits come back as
    float [B, ..., 256] on ``device``. ``logits`` is the one method a format must provide: the
    default ``start``/``step`` re-run it over the whole sequence, which is right for a program
    without state; a format with a cache overrides them. ``start``/``step`` decode a batch of
    B sequences together (B = 1 in validation, ``--num-samples`` in generate).
    """

    max_len: int  # the trained context: generate re-windows at it, validation never feeds more
    device: torch.device = torch.device("cpu")  # where logits come back (and sampling runs)
    job: Any = None  # the ``JobConfig`` that trained it, when the format keeps one

    @property
    def max_context(self) -> int | None:
        """The most bytes ``start``/``step`` can hold; ``None`` when the state does not grow
        (generate then never re-windows). By default, the trained context."""
        return self.max_len

    def logits(self, idx: torch.Tensor) -> torch.Tensor:
        """float logits [B, T, 256] for every position of ``idx`` [B, T]."""
        raise NotImplementedError(f"{type(self).__name__} must implement logits(idx)")

    def start(self, idx: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """Encode ``idx`` [B, T]: the next byte's logits [B, 256] and a state to continue from."""
        return self.logits(idx)[:, -1], idx

    def step(self, token: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """Append ``token`` [B]: the next byte's logits [B, 256] and the new state."""
        return self.start(torch.cat([state, token.view(-1, 1).to(state.device)], dim=1))

    def compile(self) -> None:
        """Make ``step`` faster where the format can (``generate --compile``); by default nothing."""


class DataSource(Protocol):
    """A named corpus. ``charlm data pull NAME [key=value ...] --out DIR`` structures the
    options into the source's attrs class (as a job file's, so a required option left out is
    ``config error: data_source.NAME.key: missing (required)``), calls ``fetch(DIR / "raw")``, then
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
