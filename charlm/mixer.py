"""Online context mixing: the network's prediction mixed with count-based byte models.

A network trained on one corpus does not know the document in front of it; a count-based
model (PPM, PAQ) knows nothing else. Mixing them, as PAQ, cmix and nncp do with their final
mixer, keeps the best of both:

- **count models**, one per context order n in ``orders``: the last n bytes of a row are
  hashed into a table of ``2**slot_bits`` slots, each holding 256 byte counts (uint16; a
  slot's counts are halved when one passes ``COUNT_LIMIT``, so that they follow the
  document). A slot remembers a 16-bit tag of its context; another context hashing there
  finds no counts and takes the slot over when it is updated. Its prediction is
  ``(count + alpha) / (total + 256 alpha)``.
- **the mixer**: geometric mixing (a softmax of a weighted sum of log-probabilities,
  ``log q = sum_i w_i log p_i - log Z``), the network's input first. The weight vector is
  chosen by a small context: the highest order whose context has been seen before. The
  weights start at (1, 0, ..., 0), the network alone, and learn by one online gradient step
  on ``-log q(byte)`` after every byte.

The rows of a batch (the segments of ``charlm.adapt``'s reading) share the tables and the
weights; the bytes of one column are predicted first and then all update the model, in
row order. So a prediction depends only on bytes of earlier columns (strictly causal), and
the encoder and the decoder, which run the same steps on the same bytes, compute
bit-identical probabilities: integer counts and a float64 path of the same numpy
operations on both sides. Everything is vectorised over the rows.
"""

from __future__ import annotations

import attrs
import numpy as np

from charlm.errors import UsageError
from charlm.options import typed_options

COUNT_LIMIT = 1023
MAX_ORDER = 8  # contexts are kept as the last 8 bytes of a row, packed in a uint64
_HASH = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing
_TAG = np.uint64(0xD6E8FEB86659FD93)


@attrs.frozen
class MixOptions:
    """Which count models the network is mixed with, and how fast the mixer learns."""

    orders: str = "2+3+4+6+8"  # context orders (bytes), joined by "+"
    slot_bits: int = 16  # 2**slot_bits contexts per order, 256 counts each (uint16: 32 MiB at 16)
    alpha: float = 0.05  # the counts' additive prior
    lr: float = 0.001  # the mixer's learning rate

    def __attrs_post_init__(self):
        orders = self.order_list()
        if not orders or any(not 1 <= n <= MAX_ORDER for n in orders) or len(set(orders)) != len(orders):
            raise UsageError(f"mix orders must be distinct integers in [1, {MAX_ORDER}] joined by '+', got {self.orders!r}")
        if not 8 <= self.slot_bits <= 24:
            raise UsageError(f"mix slot_bits must be in [8, 24], got {self.slot_bits}")
        if not 0 < self.alpha < float("inf"):
            raise UsageError(f"mix alpha must be a finite number > 0, got {self.alpha}")
        if not 0 <= self.lr < float("inf"):
            raise UsageError(f"mix lr must be a finite number >= 0, got {self.lr}")

    def order_list(self) -> list[int]:
        try:
            return sorted(int(n) for n in str(self.orders).split("+"))
        except ValueError:
            raise UsageError(f"mix orders must be integers joined by '+', got {self.orders!r}") from None

    def to_dict(self) -> dict:
        return attrs.asdict(self)


def mix_options(values: dict[str, str]) -> MixOptions:
    """Text values (``parse_key_values``) -> ``MixOptions``; an unknown key or a bad value is a usage error."""
    return typed_options(MixOptions, values, "mix")


class ContextMixer:
    """Mixes ``rows`` predictions at a time: ``predict`` a column, then ``update`` with its bytes."""

    def __init__(self, options: MixOptions, rows: int):
        self.options = options
        self.orders = options.order_list()
        slots = 1 << options.slot_bits
        self.counts = [np.zeros((slots, 256), np.uint16) for _ in self.orders]
        self.tags = [np.zeros(slots, np.uint16) for _ in self.orders]
        self.history = np.zeros(rows, np.uint64)  # each row's last 8 bytes, newest lowest
        n_inputs = 1 + len(self.orders)
        self.weights = np.zeros((len(self.orders) + 1, n_inputs))
        self.weights[:, 0] = 1.0
        self._pending = None
        self._log_count = np.log(np.arange(COUNT_LIMIT + 2) + options.alpha)  # a lookup: cheaper than a log per count

    def _contexts(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Slot and tag of every row's context, per order."""
        bits = np.uint64(self.options.slot_bits)
        slots, tags = [], []
        for n in self.orders:
            context = self.history & np.uint64((1 << (8 * n)) - 1)
            if 8 * n <= self.options.slot_bits:
                slots.append(context.astype(np.int64))  # small orders: one slot per context
            else:
                salted = (context + np.uint64(n << 56)) * _HASH
                slots.append((salted >> (np.uint64(64) - bits)).astype(np.int64))
            tags.append(((context * _TAG) >> np.uint64(48)).astype(np.uint16))
        return slots, tags

    def predict(self, log_probs: np.ndarray) -> np.ndarray:
        """The network's log-probabilities [rows, 256] -> mixed probabilities [rows, 256] (float64)."""
        alpha = self.options.alpha
        slots, tags = self._contexts()
        inputs = [log_probs.astype(np.float64)]
        seen = np.zeros(len(log_probs), np.int64)  # the weight set: the highest order seen
        for i, (table, tag_table, slot, tag) in enumerate(zip(self.counts, self.tags, slots, tags)):
            counts = table[slot]
            counts[tag_table[slot] != tag] = 0
            total = counts.sum(axis=1, keepdims=True, dtype=np.int64)
            inputs.append(self._log_count[counts] - np.log(total + 256 * alpha))
            seen = np.where(total[:, 0] > 0, i + 1, seen)
        weights = self.weights[seen]
        mixed = weights[:, :1] * inputs[0]
        for i in range(1, len(inputs)):  # a sum of [rows, 256] products: no [rows, inputs, 256] copy
            mixed += weights[:, i : i + 1] * inputs[i]
        mixed -= mixed.max(axis=1, keepdims=True)
        probs = np.exp(mixed)
        probs /= probs.sum(axis=1, keepdims=True)
        self._pending = (slots, tags, inputs, seen, probs)
        return probs

    def update(self, byte: np.ndarray, active: np.ndarray) -> None:
        """Learn the bytes just coded (``byte`` [rows]) of the ``active`` rows, in row order."""
        slots, tags, inputs, seen, probs = self._pending
        rows = np.flatnonzero(active)
        byte = np.asarray(byte, np.int64)[rows]
        # the mixer: d(-log q(y))/dw_i = E_q[log p_i] - log p_i(y)
        probs = probs[rows]
        chosen = np.stack([x[rows, byte] for x in inputs], axis=1)
        expected = np.stack([np.einsum("rs,rs->r", x[rows], probs) for x in inputs], axis=1)
        np.add.at(self.weights, seen[rows], -self.options.lr * (expected - chosen))
        for table, tag_table, slot, tag in zip(self.counts, self.tags, slots, tags):
            slot, tag = slot[rows], tag[rows]
            stale = tag_table[slot] != tag
            if stale.any():
                table[slot[stale]] = 0
                tag_table[slot[stale]] = tag[stale]
            np.add.at(table, (slot, byte), 1)
            full = table[slot, byte] > COUNT_LIMIT
            if full.any():
                table[np.unique(slot[full])] >>= 1
        self.history[rows] = (self.history[rows] << np.uint64(8)) | byte.astype(np.uint64)
        self._pending = None

    def costs(self, log_probs: np.ndarray, byte: np.ndarray, active: np.ndarray) -> np.ndarray:
        """Nats of ``byte`` under the mixed prediction [rows] (0 where inactive), then learn it."""
        probs = self.predict(log_probs)
        # the range coder's probabilities are 24-bit fixed point: none is below 2**-24
        nats = -np.log(np.maximum(probs[np.arange(len(byte)), np.asarray(byte, np.int64)], 2.0**-24))
        self.update(byte, active)
        return np.where(active, nats, 0.0)
