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
