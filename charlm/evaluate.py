"""Exact bits-per-byte over a whole split, with sliding windows.

Byte ``t`` (every byte but the first) is scored exactly once, by the window that gives it
the most context among those that reach it. Windows are ``seq_len`` bytes long and start
``stride`` bytes apart, so every scored byte after the first window sees at least
``seq_len - stride`` bytes of context; the last window is pulled back to end on the last
byte, so every window has the same length and they batch without padding. Only the
model's full-sequence path is used, so any block kind works.
"""

from __future__ import annotations

import bz2
import lzma
import math
import sys
import time
import zlib

import attrs
import numpy as np
import torch
import torch.nn.functional as F

from charlm import distributed
from charlm.distributed import DistInfo
from charlm.errors import CharLMError, UsageError


@attrs.frozen
class EvalResult:
    bpb: float
    nats_per_byte: float
    bytes_scored: int
    seconds: float
    bytes_per_s: float

    def to_dict(self) -> dict:
        return attrs.asdict(self)


def window_plan(n_bytes: int, seq_len: int, stride: int) -> list[tuple[int, int]]:
    """``(start, first_scored)`` per window: inputs ``[start, start+L)`` predict ``[start+1, start+L]``.

    ``L = min(seq_len, n_bytes - 1)``; a window scores targets from ``first_scored`` (an
    offset into its L targets) to its end.
    """
    length = min(seq_len, n_bytes - 1)
    plan, scored_to = [], 0  # scored_to: the last target index already scored
    end = length
    while True:
        start = end - length
        plan.append((start, scored_to - start))
        scored_to = end
        if end == n_bytes - 1:
            return plan
        end = min(end + stride, n_bytes - 1)


def as_tokens(data) -> np.ndarray:
    """bytes, a uint8 array or memmap (kept lazy), or a tensor -> a 1-D uint8 array."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(bytes(data), dtype=np.uint8)
    if isinstance(data, torch.Tensor):
        return data.detach().cpu().numpy().astype(np.uint8, copy=False).reshape(-1)
    return np.asarray(data).reshape(-1)


def random_windows(tokens: np.ndarray, seq_len: int, n_bytes: int, seed: int, name: str = "the split") -> np.ndarray:
    """Starts of ``max(1, n_bytes // seq_len)`` seeded random windows of ``seq_len + 1`` bytes."""
    span = len(tokens) - seq_len - 1
    if span < 0:
        raise CharLMError(f"{name}: the validation split is shorter than seq_len + 1 = {seq_len + 1} bytes")
    return np.random.default_rng(seed).integers(0, span + 1, size=max(1, n_bytes // seq_len))


@torch.inference_mode()
def score_windows(
    model: torch.nn.Module,
    tokens: np.ndarray,
    starts: np.ndarray,
    length: int,
    first_scored: np.ndarray | None = None,
    batch_size: int = 8,
    device: torch.device | str | None = None,
    amp_dtype: torch.dtype | None = None,
    bar=None,
) -> float:
    """Summed nats of ``model`` predicting ``tokens[s + 1 : s + length + 1]`` from ``tokens[s : s + length]``.

    One window per start ``s``; window ``i`` counts its targets from offset ``first_scored[i]``
    on (all of them when ``first_scored`` is None). ``amp_dtype`` runs the forward under
    autocast; the sum is float64. The model's train/eval mode is restored after.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    starts = np.asarray(starts, dtype=np.int64)
    first_scored = np.zeros(len(starts), dtype=np.int64) if first_scored is None else np.asarray(first_scored)
    offsets = np.arange(length + 1)
    positions = torch.arange(length, device=device)
    total_nats = torch.zeros((), dtype=torch.float64, device=device)
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(starts), batch_size):
            batch = starts[i : i + batch_size]
            chunk = torch.from_numpy(tokens[batch[:, None] + offsets].astype(np.int64)).to(device)
            x, y = chunk[:, :-1], chunk[:, 1:]
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                logits, _ = model(x, 0, None)
            nll = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1), reduction="none")
            first = torch.from_numpy(first_scored[i : i + batch_size]).to(device)
            scored = positions[None, :] >= first[:, None]
            total_nats += (nll.view(len(batch), length) * scored).sum(dtype=torch.float64)
            if bar is not None:
                bar.update(len(batch))
        return total_nats.item()  # one sync, at the end
    finally:
        model.train(was_training)


def evaluate_bpb(
    model: torch.nn.Module,
    tokens,
    seq_len: int,
    stride: int | None = None,
    batch_size: int = 8,
    device: torch.device | str | None = None,
    max_bytes: int | None = None,
    progress: bool = False,
    amp_dtype: torch.dtype | None = None,
    dist: DistInfo | None = None,
) -> EvalResult:
    """Bits per byte of ``model`` on ``tokens`` (the first ``max_bytes`` of them when given).

    ``stride`` defaults to ``seq_len // 2``; the model's train/eval mode is restored after.
    ``amp_dtype`` (e.g. ``torch.bfloat16``) runs the forward under autocast; the loss is
    always summed in float64. Under torchrun (``dist``) every rank scores its share of the
    windows and the float64 sums are added: the same figure as one process.
    """
    tokens = as_tokens(tokens)
    if max_bytes is not None:
        if max_bytes < 2:
            raise UsageError(f"max_bytes must be >= 2, got {max_bytes}")
        tokens = tokens[:max_bytes]
    n = len(tokens)
    if n < 2:
        raise CharLMError(f"cannot evaluate on {n} byte(s): need at least 2 (one to predict from, one to score)")
    stride = seq_len // 2 if stride is None else stride
    if not 1 <= stride <= seq_len:
        raise UsageError(f"stride must be in [1, seq_len={seq_len}], got {stride}")

    plan = np.array(window_plan(n, seq_len, stride), dtype=np.int64)
    dist = dist or DistInfo()
    plan = plan[distributed.shard(len(plan), dist)]
    bar = _progress_bar(len(plan)) if progress else None
    t0 = time.perf_counter()
    try:
        nats = score_windows(
            model, tokens, plan[:, 0], min(seq_len, n - 1), plan[:, 1], batch_size, device, amp_dtype, bar
        )
    finally:
        if bar is not None:
            bar.close()
    nats = distributed.all_reduce_sum(nats, dist, torch.device(device) if device is not None else next(model.parameters()).device)
    seconds = time.perf_counter() - t0
    scored_bytes = n - 1
    nats_per_byte = nats / scored_bytes
    return EvalResult(
        bpb=nats_per_byte / math.log(2),
        nats_per_byte=nats_per_byte,
        bytes_scored=scored_bytes,
        seconds=seconds,
        bytes_per_s=scored_bytes / seconds if seconds > 0 else float("inf"),
    )


def _progress_bar(total: int):
    from tqdm import tqdm

    return tqdm(total=total, unit="window", desc="eval", file=sys.stderr, leave=False)


def compressor_bpb(data: bytes) -> dict[str, float]:
    """Bits per byte that zlib, bz2 and lzma (strongest presets) reach on ``data``."""
    n = max(len(data), 1)
    return {
        "zlib": 8 * len(zlib.compress(data, 9)) / n,
        "bz2": 8 * len(bz2.compress(data, 9)) / n,
        "lzma": 8 * len(lzma.compress(data, preset=9)) / n,
    }
