"""Optimizers: AdamW (decay on matrices only) and Muon for hidden matrices with AdamW for the rest.

An optimizer factory gets the model and builds its own parameter groups. Every group
carries ``base_lr``: the training loop sets ``lr = base_lr * schedule(step, progress)``.
"""

from __future__ import annotations

from typing import Literal

import attrs
import torch
from torch.optim.optimizer import _get_fused_kernels_supported_devices

import charlm
from charlm.config import resolve_device
from charlm.validators import non_negative, positive


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

    def check(self, job) -> None:
        device = resolve_device(job.device)
        if self.fused is True and device.type not in _get_fused_kernels_supported_devices():
            raise ValueError(f"fused: fused AdamW is not available on {device.type}; use fused = \"auto\"")


@attrs.define
class MuonConfig:
    lr: float = attrs.field(default=0.02, validator=positive)  # for hidden matrices (Muon)
    momentum: float = attrs.field(default=0.95, validator=non_negative)
    ns_steps: int = attrs.field(default=5, validator=positive)
    weight_decay: float = attrs.field(default=0.0, validator=non_negative)
    adamw: AdamWConfig = attrs.Factory(AdamWConfig)  # for embeddings, head, norms, biases

    def check(self, job) -> None:
        self.adamw.check(job)


def _is_decayed(name: str, param: torch.nn.Parameter, no_decay: set[str]) -> bool:
    return param.ndim >= 2 and name not in no_decay


def _adamw_groups(named_params, no_decay: set[str], cfg: AdamWConfig) -> list[dict]:
    decay = [p for n, p in named_params if _is_decayed(n, p, no_decay)]
    other = [p for n, p in named_params if not _is_decayed(n, p, no_decay)]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay, "base_lr": cfg.lr},
        {"params": other, "weight_decay": 0.0, "base_lr": cfg.lr},
    ]
    return [g for g in groups if g["params"]]


def _new_adamw(groups: list[dict], cfg: AdamWConfig) -> torch.optim.AdamW:
    params = [p for g in groups for p in g["params"]]
    fused = cfg.fused
    if fused == "auto":
        devices = _get_fused_kernels_supported_devices()
        fused = all(p.device.type in devices and p.is_floating_point() for p in params)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, fused=bool(fused))


def adamw(cfg: AdamWConfig, *, model: torch.nn.Module):
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return _new_adamw(_adamw_groups(named, model.no_weight_decay(), cfg), cfg)


class MuonAdamW:
    """Muon on the hidden weight matrices, AdamW on everything else, stepped as one optimizer."""

    def __init__(self, muon: torch.optim.Optimizer, adamw: torch.optim.Optimizer):
        self.muon, self.adamw = muon, adamw

    @property
    def param_groups(self) -> list[dict]:
        return self.muon.param_groups + self.adamw.param_groups

    def step(self) -> None:
        self.muon.step()
        self.adamw.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.muon.zero_grad(set_to_none=set_to_none)
        self.adamw.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.muon.load_state_dict(state["muon"])
        self.adamw.load_state_dict(state["adamw"])


def muon(cfg: MuonConfig, *, model: torch.nn.Module):
    no_decay = model.no_weight_decay()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    # Muon orthogonalises 2-D updates: right for the matrices inside blocks, not for the byte
    # embedding or the head (lookup tables), nor for conv kernels and other N-D tensors.
    hidden = [p for n, p in named if n.startswith("blocks.") and p.ndim == 2 and n not in no_decay]
    hidden_ids = {id(p) for p in hidden}
    rest = [(n, p) for n, p in named if id(p) not in hidden_ids]
    muon_opt = torch.optim.Muon(
        [{"params": hidden, "base_lr": cfg.lr}],
        lr=cfg.lr,
        momentum=cfg.momentum,
        ns_steps=cfg.ns_steps,
        weight_decay=cfg.weight_decay,
    )
    return MuonAdamW(muon_opt, _new_adamw(_adamw_groups(rest, no_decay, cfg.adamw), cfg.adamw))


@charlm.hookimpl
def register_optimizers(register):
    register("adamw", adamw, config=AdamWConfig, help="AdamW, weight decay on matrices only, fused where available")
    register("muon", muon, config=MuonConfig, help="Muon for hidden matrices + AdamW for embeddings, head, norms")
