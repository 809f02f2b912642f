"""Muon whose Newton-Schulz iterations run in bfloat16 only where the device multiplies it natively.

``torch.optim.Muon`` always orthogonalises in bfloat16. On a CPU without bf16 units (AVX2
only: most laptops, AMD EPYC before Zen 4) torch emulates those matmuls, and at the micro
recipe's shapes Muon's step took 390 of a 625 ms training step (bench/results/train_profile.md);
in float32 it takes a few milliseconds. Where bf16 is native (AMX, AVX512-BF16, CUDA) the
iterations stay in bf16, exactly as torch runs them. The state and the groups are torch's, so
checkpoints written with ``torch.optim.Muon`` load as they are.
"""

from __future__ import annotations

import torch
from torch.optim._muon import _adjust_lr

from charlm.config import resolve_precision


def newton_schulz(update: torch.Tensor, coefficients: tuple[float, float, float], steps: int, eps: float, dtype: torch.dtype) -> torch.Tensor:
    """The quintic Newton-Schulz iteration of ``torch.optim.Muon`` (the same ops in the same
    order, so bfloat16 gives torch's result bit for bit), in ``dtype``."""
    a, b, c = coefficients
    x = update.to(dtype)
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    x = x.div(x.norm().clamp(min=eps))  # spectral norm at most 1
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


def iteration_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 where ``device`` multiplies it natively (``precision = "auto"``'s test), else float32."""
    return torch.bfloat16 if resolve_precision("auto", device) == "bf16" else torch.float32


class Muon(torch.optim.Muon):
    """``torch.optim.Muon`` with the Newton-Schulz iterations in ``iteration_dtype`` of the
    parameters' device."""

    def __init__(self, params, **options):
        super().__init__(params, **options)
        first = next(p for group in self.param_groups for p in group["params"])
        self.iteration_dtype = iteration_dtype(first.device)

    @torch.no_grad()
    def step(self, closure=None):
        assert closure is None, "charlm never passes a closure"
        for group in self.param_groups:
            params, grads, buffers = [], [], []
            self._init_group(group, params, grads, buffers)
            for param, grad, buffer in zip(params, grads, buffers):
                buffer.lerp_(grad, 1 - group["momentum"])
                update = grad.lerp(buffer, group["momentum"]) if group["nesterov"] else buffer
                ortho = self.orthogonalize(update, group)
                param.mul_(1 - group["lr"] * group["weight_decay"])
                param.add_(ortho, alpha=-_adjust_lr(group["lr"], group["adjust_lr_fn"], param.shape))

    def orthogonalize(self, update: torch.Tensor, group: dict) -> torch.Tensor:
        ortho = newton_schulz(update, group["ns_coefficients"], group["ns_steps"], group["eps"], self.iteration_dtype)
        return ortho.to(update.dtype)
