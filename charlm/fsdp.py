"""FSDP2 (``distributed.strategy = "fsdp"``): parameters, gradients and optimizer state sharded across ranks.

``torch.distributed.fsdp.fully_shard`` turns each parameter into a DTensor sharded on its
first dimension. Every block of the registry's stack is one unit (its parameters are
gathered for its forward and backward, then freed), and the root holds the rest: byte and
n-gram tables, positional encoding, final norm and head. The optimizer is built after
sharding, from the same named parameters as under DDP, so its groups, ``no_weight_decay``
and learning rates are the same; its state is sharded with the parameters.

Muon is the one exception to "elementwise on shards": Newton-Schulz orthogonalises the whole
update matrix, so ``GatheredMuon`` gathers each update, orthogonalises it exactly as
``Muon`` does on one process, and keeps this rank's rows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

from charlm.builtin.muon import Muon
from charlm.model import ByteLM
from charlm.registry import get_registry

PARAM_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def shard_model(model: ByteLM, precision: str) -> ByteLM:
    """Shard ``model`` in place: each block a unit, then the root. Gradients are reduced in fp32."""
    policy = MixedPrecisionPolicy(param_dtype=PARAM_DTYPES[precision], reduce_dtype=torch.float32)
    for block in model.blocks:
        fully_shard(block, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    return model


def torch_optimizers(optimizer) -> list[torch.optim.Optimizer]:
    """The ``torch.optim`` optimizers behind ``optimizer``: itself, or those an ``OptimizerChain`` steps."""
    if isinstance(optimizer, torch.optim.Optimizer):
        return [optimizer]
    return list(optimizer.optimizers.values())


class GatheredMuon(Muon):
    """``Muon`` for DTensor parameters: momentum on the shards, Newton-Schulz on the gathered
    matrix (on sharded rows it would not be an orthogonalisation), this rank's rows back."""

    def orthogonalize(self, update: torch.Tensor, group: dict) -> torch.Tensor:
        if not isinstance(update, DTensor):
            return super().orthogonalize(update, group)
        ortho = super().orthogonalize(update.full_tensor(), group)
        # every rank holds the same matrix: keep our rows, no traffic
        return distribute_tensor(ortho, update.device_mesh, update.placements, src_data_rank=None)


def shard_optimizer(optimizer) -> None:
    """Make ``optimizer`` (built on a sharded model) correct for DTensors: Muon gathers its updates."""
    for inner in torch_optimizers(optimizer):
        if type(inner) is Muon:
            inner.__class__ = GatheredMuon  # same state and groups, only the orthogonalisation differs


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor; any other tensor as it is."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


@contextlib.contextmanager
def loading_into(model: ByteLM, optimizer, job) -> Iterator[tuple[ByteLM, object]]:
    """An unsharded model and optimizer of the job's kind to load a whole (file or DCP) checkpoint
    into; on leaving, their weights and state are sharded into ``model`` and ``optimizer``.

    Every rank holds the whole model and optimizer state for a moment: fine for the models that
    run on CPU here; a model that only fits sharded would load the DCP shards directly instead.
    """
    with torch.random.fork_rng():  # building a model draws initial weights: the run's RNG stays as it is
        plain = ByteLM(job.model, max_len=job.seq_len)
    plain_optimizer = get_registry().create("optimizer", job.optimizer, model=plain)
    yield plain, plain_optimizer
    model_state, optimizer_state = get_state_dict(plain, torch_optimizers(plain_optimizer))
    set_state_dict(
        model,
        torch_optimizers(optimizer),
        model_state_dict=model_state,
        optim_state_dict=optimizer_state,
        options=StateDictOptions(full_state_dict=True),
    )
