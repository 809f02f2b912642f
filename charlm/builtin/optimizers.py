"""Optimizers: AdamW (decay on matrices only) and Muon for hidden matrices with AdamW for the rest.

An optimizer factory gets the model and builds its own parameter groups. Every group
carries ``base_lr``: the training loop sets ``lr = base_lr * schedule(step, progress)``.
This module holds the options and the registration; the optimizers are built by
``charlm.builtin.torch_optimizers``, imported when one is built (this plugin imports no torch).
"""

from __future__ import annotations

from typing import Literal

import attrs

import charlm
from charlm.config import device_type
from charlm.validators import in_range, non_negative, positive


def _betas(instance, attribute, value):
    if not all(0.0 <= b < 1.0 for b in value):
        raise ValueError(f"each beta must be in [0, 1), got {list(value)}")


@attrs.define
class AdamWConfig:
    lr: float = attrs.field(default=3e-3, validator=positive)
    betas: tuple[float, float] = attrs.field(default=(0.9, 0.95), validator=_betas)
    eps: float = attrs.field(default=1e-8, validator=positive)
    weight_decay: float = attrs.field(default=0.1, validator=non_negative)
    fused: bool | Literal["auto"] = "auto"  # "auto": fused where the device has the kernel
    # the n-gram tables (model.ngram_buckets): their own learning rate (None: ``lr``), and
    # "lazy": sparse gradients and an Adam step on the rows a batch used only (LazyAdam),
    # instead of a dense gradient and update over every row of every table each step
    ngram_lr: float | None = attrs.field(default=None, validator=positive)
    ngram_update: Literal["dense", "lazy"] = "dense"

    def check(self, job) -> None:
        if self.ngram_update == "lazy" and job.distributed.strategy == "fsdp":
            raise ValueError('ngram_update: "lazy" (sparse gradients) does not shard; with distributed.strategy = "fsdp" use "dense"')
        if self.fused is not True:
            return
        # only an explicit fused = true needs torch to answer: config validate stays fast otherwise
        from torch.optim.optimizer import _get_fused_kernels_supported_devices

        device = device_type(job.device)
        if device not in _get_fused_kernels_supported_devices():
            raise ValueError(f"fused: fused AdamW is not available on {device}; use fused = \"auto\"")


@attrs.define
class MuonConfig:
    lr: float = attrs.field(default=0.02, validator=positive)  # for hidden matrices (Muon)
    momentum: float = attrs.field(default=0.95, validator=non_negative)
    ns_steps: int = attrs.field(default=5, validator=in_range(1, 99))  # torch.optim.Muon refuses 100 and more
    weight_decay: float = attrs.field(default=0.0, validator=non_negative)
    adamw: AdamWConfig = attrs.Factory(AdamWConfig)  # for embeddings, head, norms, biases

    def check(self, job) -> None:
        self.adamw.check(job)


@charlm.hookimpl
def register_optimizers(register):
    register("adamw", "charlm.builtin.torch_optimizers:adamw", config=AdamWConfig, help="AdamW, weight decay on matrices only, fused where available")
    register("muon", "charlm.builtin.torch_optimizers:muon", config=MuonConfig, help="Muon for hidden matrices + AdamW for embeddings, head, norms")
