"""Adaptive evaluation (dynamic evaluation, Krause et al. 2018): the model keeps learning as it reads.

A text is read in a fixed order that ``charlm compress`` shares (so its file sizes match
what ``charlm eval --adapt`` reports):

- the text is cut into ``segments`` contiguous parts of near-equal length, read side by
  side as the rows of one batch; each row starts with ``START_BYTE`` (a new document);
- each row is read in chunks of ``window`` bytes; a byte is predicted from the bytes before
  it in its row, at most ``seq_len - 1`` of them (the chunk plus up to
  ``seq_len - window`` bytes before it);
- after a chunk is scored, ``steps`` optimizer steps are taken on that chunk's bytes (all
  rows at once), and only then is the next chunk scored.

So no byte is ever scored by weights that were updated on it (strictly causal). The
weights are shared by all rows: a chunk of row 0 profits from what rows 1.. taught.
"""

from __future__ import annotations

import math

import attrs
import numpy as np
import torch
import torch.nn.functional as F

from charlm.errors import UsageError
from charlm.generate import START_BYTE
from charlm.mixer import ContextMixer, MixOptions
from charlm.options import typed_options

OPTIMIZERS = ("adam", "sgd")
SEGMENT_BYTES = 2048  # the automatic segment count gives each row at least this many bytes (speed: rows decode as one batch)
MAX_SEGMENTS = 64


@attrs.frozen
class AdaptOptions:
    """How the weights learn while reading."""

    lr: float = 3e-3  # Adam; of 5e-4 .. 3e-3 with mixing, best on the val split and on Moby-Dick (bench/results/compress.md)
    steps: int = 1
    window: int = 96  # bytes per chunk: the weights change every ``window`` bytes of each row (64: files 0.005-0.02
    # bits/byte smaller, but `charlm compress` about 25 % slower: 4,958 bytes/s decompressing the val split on 2 cores)
    params: str = "all"  # "all", or name fragments joined by "+": "ngram+norm+head"
    optimizer: str = "adam"

    def __attrs_post_init__(self):
        if not self.lr >= 0 or not math.isfinite(self.lr):
            raise UsageError(f"adapt lr must be a finite number >= 0, got {self.lr}")
        if self.steps < 1:
            raise UsageError(f"adapt steps must be >= 1, got {self.steps}")
        if self.window < 1:
            raise UsageError(f"adapt window must be >= 1, got {self.window}")
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(f"adapt optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")

    def to_dict(self) -> dict:
        return attrs.asdict(self)


def parse_key_values(items: list[str] | None) -> dict[str, str]:
    """``["lr=1e-3,steps=2", "window=32"]`` -> ``{"lr": "1e-3", "steps": "2", "window": "32"}``."""
    values = {}
    for item in ",".join(items or []).split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"adapt option {item!r}: expected key=value")
        values[key.strip()] = value.strip()
    return values


def adapt_options(values: dict[str, str]) -> AdaptOptions:
    """Text values -> ``AdaptOptions`` (an unknown key or a bad value is a usage error)."""
    return typed_options(AdaptOptions, values, "adapt")


def check_window(window: int, seq_len: int) -> None:
    if not 1 <= window <= seq_len:
        raise UsageError(f"adapt window must be in [1, the model's context ({seq_len})], got {window}")


def auto_segments(n_bytes: int) -> int:
    return max(1, min(MAX_SEGMENTS, n_bytes // SEGMENT_BYTES))


def segment_lengths(n_bytes: int, segments: int) -> list[int]:
    """Near-equal contiguous parts, the longer ones first; together exactly ``n_bytes``."""
    base, extra = divmod(n_bytes, segments)
    return [base + (i < extra) for i in range(segments)]


class Reading:
    """The grid a text is read on: row b is [START_BYTE, segment b's bytes, zero padding]."""

    def __init__(self, lengths: list[int], window: int, seq_len: int):
        self.lengths = lengths
        self.window = window
        self.seq_len = seq_len
        self.n_chunks = math.ceil(max(lengths, default=0) / window)
        self.grid = torch.zeros(len(lengths), 1 + self.n_chunks * window, dtype=torch.long)
        self.grid[:, 0] = START_BYTE

    def fill(self, data: np.ndarray) -> None:
        """Place a whole text (known up front: evaluation, the encoder)."""
        start = 0
        for row, length in enumerate(self.lengths):
            self.grid[row, 1 : 1 + length] = torch.from_numpy(data[start : start + length].astype(np.int64))
            start += length

    def context(self, k: int) -> int:
        """Bytes before chunk ``k``'s first byte that the model sees (``START_BYTE`` included)."""
        return min(1 + k * self.window, self.seq_len - self.window + 1)

    def chunk(self, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(inputs [B, ctx + window - 1], targets [B, window], mask [B, window])`` of chunk ``k``."""
        first = 1 + k * self.window
        ctx = self.context(k)
        inputs = self.grid[:, first - ctx : first + self.window - 1]
        targets = self.grid[:, first : first + self.window]
        index = torch.arange(k * self.window, (k + 1) * self.window)
        mask = index[None, :] < torch.tensor(self.lengths)[:, None]
        return inputs, targets, mask

    def text(self) -> np.ndarray:
        """The bytes back in text order (decoding)."""
        rows = [self.grid[row, 1 : 1 + length] for row, length in enumerate(self.lengths)]
        return torch.cat(rows).numpy().astype(np.uint8) if rows else np.zeros(0, np.uint8)


def select_parameters(model: torch.nn.Module, params: str) -> list[torch.nn.Parameter]:
    if params == "all":
        return list(model.parameters())
    fragments = [f for f in params.split("+") if f]
    chosen = [p for name, p in model.named_parameters() if any(f in name for f in fragments)]
    if not chosen:
        names = ", ".join(sorted({name.split(".")[0] for name, _ in model.named_parameters()}))
        raise UsageError(f"adapt params {params!r} match no parameter (top-level names: {names})")
    return chosen


class Adapter:
    """Takes optimizer steps on chunks just scored. Deterministic: the same chunks in the
    same order give bit-identical weights (CPU, same thread count)."""

    def __init__(self, model: torch.nn.Module, options: AdaptOptions):
        self.model = model
        self.options = options
        params = select_parameters(model, options.params)
        if options.optimizer == "adam":
            self.optimizer = torch.optim.Adam(params, lr=options.lr, foreach=False)
        else:
            self.optimizer = torch.optim.SGD(params, lr=options.lr, foreach=False)

    def update(self, inputs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Steps on the masked targets; returns the log-probabilities [B, window, 256] that
        predicted them before the first step."""
        weight = mask.float()
        before = None
        for _ in range(self.options.steps):
            with torch.enable_grad():
                log_probs = chunk_log_probs(self.model, inputs, targets.size(1))
                nll = -log_probs.gather(-1, targets[..., None])[..., 0]
                loss = (nll * weight).sum() / weight.sum().clamp(min=1.0)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
            self.optimizer.step()
            before = log_probs.detach() if before is None else before
        return before


def chunk_log_probs(model: torch.nn.Module, inputs: torch.Tensor, window: int) -> torch.Tensor:
    """Log-probabilities [B, window, 256] of the last ``window`` predictions of ``inputs``."""
    logits, _ = model(inputs, 0, None)
    return F.log_softmax(logits[:, -window:].float(), dim=-1)


def read_costs(
    model: torch.nn.Module,
    tokens: np.ndarray,
    seq_len: int,
    options: AdaptOptions,
    adapt: bool,
    segments: int,
    mix: MixOptions | None = None,
) -> np.ndarray:
    """Nats of every byte of ``tokens`` (its first too, predicted from ``START_BYTE``) read
    in the order above; ``adapt=False`` reads the same way with fixed weights; ``mix`` mixes
    the network's predictions with count models (``charlm.mixer``). The model's weights and
    train/eval mode are restored afterwards."""
    check_window(options.window, seq_len)
    reading = Reading(segment_lengths(len(tokens), segments), options.window, seq_len)
    reading.fill(tokens)
    costs = torch.zeros_like(reading.grid, dtype=torch.float64)
    saved = {name: t.detach().clone() for name, t in model.state_dict().items()}
    was_training = model.training
    model.eval()
    adapter = Adapter(model, options) if adapt else None
    mixer = ContextMixer(mix, len(reading.lengths)) if mix is not None else None
    try:
        for k in range(reading.n_chunks):
            inputs, targets, mask = reading.chunk(k)
            if adapter is not None:
                log_probs = adapter.update(inputs, targets, mask)
            else:
                with torch.no_grad():
                    log_probs = chunk_log_probs(model, inputs, options.window)
            first = 1 + k * options.window
            if mixer is None:
                nll = -log_probs.gather(-1, targets[..., None])[..., 0].double()
            else:
                columns = log_probs.double().numpy(), targets.numpy(), mask.numpy()
                nll = torch.from_numpy(np.stack([mixer.costs(*(c[:, j] for c in columns)) for j in range(options.window)], 1))
            costs[:, first : first + options.window] = nll * mask
    finally:
        model.load_state_dict(saved)
        model.train(was_training)
    rows = [costs[row, 1 : 1 + length] for row, length in enumerate(reading.lengths)]
    return torch.cat(rows).numpy() if rows else np.zeros(0)
