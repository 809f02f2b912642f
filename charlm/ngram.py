"""Hashed embeddings of the byte n-grams that end at each position (2-grams, 3-grams, ...).

Added to the byte embedding, they hand the first layer the statistics of the last few
bytes as one lookup each: memory, but almost no FLOPs, which is what a small model on a
CPU is short of (2- to 5-gram tables took the five-minute recipe from 2.026 to 1.941
bits/byte; README: Results).

``buckets[i]`` is the number of rows for the (i + 2)-grams. Each n-gram hashes into its
table with a polynomial hash of its bytes, mixed by a multiplicative hash so that n-grams
whose codes differ by a multiple of the table size do not collide in a pattern. The bytes
before a sequence's first are 0, the document separator of ``data prepare``, so training
windows, evaluation windows and a fresh generation all start the same way; decoding
carries the last bytes as state.

With ``split`` each table is ``d_model / len(buckets)`` wide (``dim``) and the tables' rows
are concatenated, not summed: each n-gram order writes its own dimensions, and the same bytes
of memory (and of AdamW's passes over them) hold ``len(buckets)`` times the rows, so fewer
n-grams collide.
"""

from __future__ import annotations

import torch
from torch import nn

PRIME = (1 << 31) - 1  # the polynomial hash is taken modulo this prime
BASE = 257
GOLDEN = 2654435761  # Knuth's multiplicative constant, ~2^32 / phi


def bucket_of(code: torch.Tensor, buckets: int) -> torch.Tensor:
    """Map polynomial hashes in [0, PRIME) to [0, buckets): the top bits of a 32-bit product.

    Written with ``%`` and ``//`` rather than bit operations, which ONNX has only for
    unsigned integers."""
    return (code * GOLDEN) % (1 << 32) * buckets // (1 << 32)


class NgramEmbedding(nn.Module):
    def __init__(self, buckets: list[int], dim: int, split: bool = False):
        """``dim``: each table's width (``ModelConfig.ngram_width``), d_model when not ``split``."""
        super().__init__()
        self.context = len(buckets)  # bytes before the current one that the longest n-gram reads
        self.split = split
        self.tables = nn.ModuleList(nn.Embedding(rows, dim) for rows in buckets)
        for table in self.tables:
            nn.init.zeros_(table.weight)  # the n-grams have no say until they learn one
        # the hash's weight of the byte ``back`` positions back, and each table's rows (derived: not saved)
        powers = [pow(BASE, back, PRIME) for back in range(self.context + 1)]
        self.register_buffer("powers", torch.tensor(powers), persistent=False)
        self.register_buffer("rows", torch.tensor(buckets), persistent=False)

    def forward(self, idx: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
        """Embeddings [B, T, d_model] of the n-grams ending at each byte of ``idx`` [B, T],
        ``before`` [B, context] holding the bytes that precede each row."""
        length, context = idx.shape[1], self.context
        seq = torch.cat([before, idx], dim=1)
        # [B, T, context + 1]: each byte, then the bytes 1, 2, ... positions before it
        back = torch.stack([seq[:, context - b : context - b + length] for b in range(context + 1)], dim=-1)
        # every n-gram's hash in a few ops (a decode step is dominated by op count): a running
        # sum of byte * BASE^back, then one modulo; exact, as the sums stay below 2^43
        codes = (back * self.powers).cumsum(dim=-1)[..., 1:] % PRIME
        rows = bucket_of(codes, self.rows)
        parts = [table(rows[..., i]) for i, table in enumerate(self.tables)]
        return torch.cat(parts, dim=-1) if self.split else sum(parts)

    def init_state(self, batch: int, device) -> torch.Tensor:
        return torch.zeros(batch, self.context, dtype=torch.long, device=device)

    @staticmethod
    def next_state(before: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The last ``context`` bytes once ``idx`` follows ``before``."""
        return torch.cat([before, idx], dim=1)[:, -before.shape[1] :]
