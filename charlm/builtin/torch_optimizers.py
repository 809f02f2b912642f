"""AdamW and Muon on ``torch.optim``, registered by ``charlm.builtin.optimizers`` (their options
are there). Each factory builds its own parameter groups, and every group carries ``base_lr``.
"""

from __future__ import annotations

import torch
from torch.optim.optimizer import _get_fused_kernels_supported_devices

from charlm.builtin.optimizers import AdamWConfig, MuonConfig


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
