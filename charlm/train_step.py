"""One optimizer step: the wrapped model (DDP, torch.compile), autocast, fp16 loss scaling,
gradient accumulation and clipping.

Autocast and the GradScaler are always present and switched by ``enabled=``: in fp32 the
autocast context does nothing and the disabled scaler passes the loss and the step
through unchanged, so there is one code path for every precision.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F

from charlm import distributed
from charlm.config import JobConfig, resolve_precision
from charlm.errors import CharLMError

AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class NonFiniteLoss(CharLMError):
    """A non-finite loss, gradient norm or weights stopped the run (``on_nonfinite = "stop"``)."""


def clip_grad_norm(parameters, max_norm: float) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_`` that also takes sparse gradients (lazily updated
    n-gram tables): each is coalesced in place, so its values are its rows' gradients, and
    they count in the norm and are scaled with the dense ones."""
    params = [p for p in parameters if p.grad is not None]
    sparse = [p for p in params if p.grad.is_sparse]
    if not sparse:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    for p in sparse:
        p.grad = p.grad.coalesce()
    dense = [p.grad for p in params if not p.grad.is_sparse]
    rows = [p.grad.values() for p in sparse]
    total = torch.nn.utils.get_total_norm(dense + rows)
    scale = (max_norm / (total + 1e-6)).clamp(max=1.0)  # as clip_grad_norm_ scales
    torch._foreach_mul_(dense + rows, scale)  # values() of a coalesced tensor are its storage
    return total


class TrainStep:
    def __init__(self, model: torch.nn.Module, optimizer, job: JobConfig, dist, device: torch.device, accum: int):
        self.model, self.optimizer, self.job = model, optimizer, job
        self.dist, self.device, self.accum = dist, device, accum
        precision = resolve_precision(job.precision, device)
        self.amp_dtype = AMP_DTYPES[precision]
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        self.forward = self._wrap(compile=job.compile is not False)

    def _wrap(self, compile: bool):
        model = self.model
        if self.dist.enabled and self.job.distributed.strategy != "fsdp":  # FSDP: sharded already (charlm.fsdp)
            from torch.nn.parallel import DistributedDataParallel

            model = DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        return torch.compile(model) if compile else model

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def try_compile(self, x: torch.Tensor) -> str | None:
        """``compile = "auto"``: compile now, on a real batch; on failure fall back to eager and say why."""
        try:
            with self.autocast():
                logits, _ = self.forward(x.to(self.device))
            logits.float().sum().backward()
            failure = None
        except Exception as exc:  # any compiler failure: the eager model is still correct
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            failure = f"{type(exc).__name__}: {first}"
            self.forward = self._wrap(compile=False)
        self.optimizer.zero_grad(set_to_none=True)
        return failure

    def __call__(self, batches, lr_factor: float) -> tuple[float, float, str | None]:
        """(mean loss, grad norm, why the update was skipped or None). A non-finite loss or
        gradient norm leaves the weights as they were; fp16's scaler skipping an inf gradient
        is by design and not reported."""
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * lr_factor
        total = torch.zeros((), device=self.device)
        for i in range(self.accum):
            x, y = (t.to(self.device, non_blocking=True) for t in next(batches))
            last = not self.dist.enabled or i == self.accum - 1  # DDP syncs gradients on the last only
            with contextlib.nullcontext() if last else distributed.no_sync(self.forward):
                with self.autocast():
                    logits, _ = self.forward(x)
                    # mean over the micro-batch, divided by accum: the sum is the big-batch mean
                    loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1)) / self.accum
                self.scaler.scale(loss).backward()
            total += loss.detach()
        loss_value = distributed.all_reduce_mean(total.item(), self.dist, self.device)
        self.scaler.unscale_(self.optimizer)
        max_norm = self.job.grad_clip if self.job.grad_clip > 0 else float("inf")
        grad_norm = clip_grad_norm(self.model.parameters(), max_norm).item()
        if not math.isfinite(loss_value):
            skipped = f"non-finite loss ({loss_value})"
        elif not self.scaler.is_enabled() and not math.isfinite(grad_norm):
            skipped = f"non-finite gradient norm ({grad_norm})"
        else:
            skipped = None
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_value, grad_norm, skipped
