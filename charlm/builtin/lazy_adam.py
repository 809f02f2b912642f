"""Lazy Adam: an Adam step on the rows of an embedding table that a batch used, no others.

The same rule as ``torch.optim.SparseAdam`` (moments and weights of the rows a sparse
gradient names, bias correction by the optimizer's step count), written as gathers and
scatters of those rows, which on a CPU is faster than SparseAdam's sparse-tensor arithmetic
(bench/results/train_profile.md). Its state has SparseAdam's keys
(``step``, ``exp_avg``, ``exp_avg_sq``), so it checkpoints and resumes like any optimizer.
"""

from __future__ import annotations

import torch


class LazyAdam(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps})

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if not p.grad.is_sparse:
                    raise RuntimeError("LazyAdam updates sparse gradients only (nn.Embedding(sparse=True))")
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                step = state["step"].item()
                grad = p.grad.coalesce()  # one row per index, duplicates summed
                rows, g = grad.indices()[0], grad.values()
                exp_avg = state["exp_avg"].index_select(0, rows).lerp_(g, 1 - beta1)
                exp_avg_sq = state["exp_avg_sq"].index_select(0, rows).mul_(beta2).addcmul_(g, g, value=1 - beta2)
                state["exp_avg"].index_copy_(0, rows, exp_avg)
                state["exp_avg_sq"].index_copy_(0, rows, exp_avg_sq)
                denom = (exp_avg_sq / (1 - beta2**step)).sqrt_().add_(group["eps"])
                p.index_add_(0, rows, exp_avg.div_(denom), alpha=-group["lr"] / (1 - beta1**step))
