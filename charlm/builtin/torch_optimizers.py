"""AdamW and Muon on ``torch.optim``, registered by ``charlm.builtin.optimizers`` (their options
are there). Each factory builds its own parameter groups, and every group carries ``base_lr``.

The n-gram tables take the AdamW options' ``ngram_lr`` and ``ngram_update``. With
``ngram_update = "lazy"`` the tables give sparse gradients and ``LazyAdam`` (SparseAdam's
rule, faster here) updates only the rows a batch used (a table has 10^4-10^5 rows, a batch
touches a few thousand): no dense gradient and no AdamW pass over every row (about 30 % of
the tables' cost saved; bench/results/train_profile.md). Lazy Adam is a different optimizer
(an unused row keeps its moments and does not move), so it is an option, and its state is
stored under its own key ("ngram") of the optimizer's state dict.
"""

from __future__ import annotations

import torch
from torch.optim.optimizer import _get_fused_kernels_supported_devices

from charlm.builtin.lazy_adam import LazyAdam
from charlm.builtin.muon import Muon
from charlm.builtin.optimizers import AdamWConfig, MuonConfig


def _is_decayed(name: str, param: torch.nn.Parameter, no_decay: set[str]) -> bool:
    return param.ndim >= 2 and name not in no_decay


def _is_ngram(name: str) -> bool:
    return name.startswith("ngram.")


def _adamw_groups(named_params, no_decay: set[str], cfg: AdamWConfig) -> list[dict]:
    # the n-gram tables get a group of their own only with their own rate: older runs' states keep their layout
    own_ngram = cfg.ngram_lr is not None
    ngram = [p for n, p in named_params if own_ngram and _is_ngram(n)]
    rest = [(n, p) for n, p in named_params if not (own_ngram and _is_ngram(n))]
    decay = [p for n, p in rest if _is_decayed(n, p, no_decay)]
    other = [p for n, p in rest if not _is_decayed(n, p, no_decay)]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay, "base_lr": cfg.lr},
        {"params": other, "weight_decay": 0.0, "base_lr": cfg.lr},
        {"params": ngram, "weight_decay": 0.0, "base_lr": cfg.ngram_lr},
    ]
    return [g for g in groups if g["params"]]


def fused_available(params) -> bool:
    """Whether torch has a fused AdamW kernel for every parameter's device (CUDA, and CPU in recent torch)."""
    devices = _get_fused_kernels_supported_devices()
    return all(p.device.type in devices and p.is_floating_point() for p in params)


def _new_adamw(groups: list[dict], cfg: AdamWConfig) -> torch.optim.AdamW:
    params = [p for g in groups for p in g["params"]]
    fused = fused_available(params) if cfg.fused == "auto" else cfg.fused
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, fused=bool(fused))


class OptimizerChain:
    """Several optimizers over disjoint parameters, stepped as one; its state dict maps each
    one's name to its state dict."""

    def __init__(self, **optimizers: torch.optim.Optimizer):
        self.optimizers = optimizers

    def __getattr__(self, name: str) -> torch.optim.Optimizer:
        try:
            return self.__dict__["optimizers"][name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def param_groups(self) -> list[dict]:
        return [group for opt in self.optimizers.values() for group in opt.param_groups]

    def step(self) -> None:
        for opt in self.optimizers.values():
            opt.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {name: opt.state_dict() for name, opt in self.optimizers.items()}

    def load_state_dict(self, state: dict) -> None:
        if set(state) != set(self.optimizers):
            raise ValueError(f"optimizer state holds {sorted(state)}, this optimizer is {sorted(self.optimizers)}")
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state[name])


def _split_lazy_ngram(named, model: torch.nn.Module, cfg: AdamWConfig) -> tuple[list, dict]:
    """(the parameters left for AdamW, {"ngram": LazyAdam} or {}): with ``ngram_update =
    "lazy"``, the n-gram tables switch to sparse gradients and get a LazyAdam of their own."""
    if cfg.ngram_update != "lazy" or getattr(model, "ngram", None) is None:
        return named, {}
    for table in model.ngram.tables:
        table.sparse = True
    lr = cfg.ngram_lr if cfg.ngram_lr is not None else cfg.lr
    tables = [p for n, p in named if _is_ngram(n)]
    lazy = LazyAdam([{"params": tables, "base_lr": lr}], lr=lr, betas=tuple(cfg.betas), eps=cfg.eps)
    return [(n, p) for n, p in named if not _is_ngram(n)], {"ngram": lazy}


def adamw(cfg: AdamWConfig, *, model: torch.nn.Module):
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    named, lazy = _split_lazy_ngram(named, model, cfg)
    opt = _new_adamw(_adamw_groups(named, model.no_weight_decay(), cfg), cfg)
    return OptimizerChain(adamw=opt, **lazy) if lazy else opt


def muon(cfg: MuonConfig, *, model: torch.nn.Module):
    no_decay = model.no_weight_decay()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    # Muon orthogonalises 2-D updates: right for the matrices inside blocks, not for the byte
    # embedding or the head (lookup tables), nor for conv kernels and other N-D tensors.
    hidden = [p for n, p in named if n.startswith("blocks.") and p.ndim == 2 and n not in no_decay]
    hidden_ids = {id(p) for p in hidden}
    rest, lazy = _split_lazy_ngram([(n, p) for n, p in named if id(p) not in hidden_ids], model, cfg.adamw)
    muon_opt = Muon(
        [{"params": hidden, "base_lr": cfg.lr}],
        lr=cfg.lr,
        momentum=cfg.momentum,
        ns_steps=cfg.ns_steps,
        weight_decay=cfg.weight_decay,
    )
    return OptimizerChain(muon=muon_opt, adamw=_new_adamw(_adamw_groups(rest, no_decay, cfg.adamw), cfg.adamw), **lazy)
