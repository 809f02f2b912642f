"""The measured matmul peak of a device: the denominator of MFU.

A CPU has no spec-sheet peak worth trusting (turbo, SMT, shared machines), so we measure
what a large square matmul reaches and report utilisation against that.
"""

from __future__ import annotations

import functools
import time

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_matmul_peak(device: str = "cpu", dtype: torch.dtype = torch.float32, n: int = 1024, seconds: float = 0.5) -> float:
    """FLOP/s of the best of repeated ``n x n`` matmuls, measured for about ``seconds``."""
    dev = torch.device(device)
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    a @ b  # warm-up: thread pools, kernel selection
    _sync(dev)
    best, deadline = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        a @ b
        _sync(dev)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


# measured once per process and device: MFU of several runs share one denominator
matmul_peak_flops = functools.lru_cache(maxsize=None)(measure_matmul_peak)
