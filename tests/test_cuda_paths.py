"""The CUDA-only branches, selected on a machine without CUDA: each decision depends on the
config and the device alone, so a CPU run checks that a CUDA job would take the GPU path
(nccl, one device per rank, bf16/fp16 autocast on the CUDA device, fused AdamW, torch.compile)."""

import types
import warnings

import pytest
import torch

from charlm.builtin.torch_optimizers import fused_available
from charlm.config import config_from_dict
from charlm.distributed import DistInfo, backend, rank_device
from charlm.model import ByteLM
from charlm.registry import get_registry
from charlm.train_step import TrainStep

CUDA = torch.device("cuda")


def param_on(device: str, floating: bool = True):
    """Stands in for a parameter on a device this machine does not have: only its device and kind are read."""
    return types.SimpleNamespace(device=torch.device(device), is_floating_point=lambda: floating)


def test_a_cuda_job_joins_with_nccl_one_device_per_rank_and_a_cpu_job_with_gloo():
    info = DistInfo(rank=3, world_size=4, local_rank=1)
    assert rank_device(CUDA, info) == torch.device("cuda", 1)
    assert backend(rank_device(CUDA, info)) == "nccl"
    assert rank_device(torch.device("cpu"), info) == torch.device("cpu")
    assert backend(torch.device("cpu")) == "gloo"


def test_fused_adamw_is_chosen_where_torch_has_the_kernel():
    assert fused_available([param_on("cuda"), param_on("cuda")])
    assert not fused_available([param_on("cuda"), param_on("meta")])
    assert not fused_available([param_on("cuda", floating=False)])


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp32", None)])
def test_precision_selects_autocast_on_the_cuda_device_and_compile_auto_compiles(precision, dtype):
    job = config_from_dict(
        {"device": "cuda", "precision": precision, "compile": "auto", "seq_len": 16, "model": {"d_model": 16, "n_layer": 1, "n_head": 2}},
        validate=False,  # validation refuses a device this machine does not have
    )
    model = ByteLM(job.model, max_len=job.seq_len)
    optimizer = get_registry().create("optimizer", job.optimizer, model=model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that CUDA is absent and disables the scaler
        step = TrainStep(model, optimizer, job, DistInfo(), CUDA, accum=1)
        autocast = step.autocast()
    assert step.amp_dtype is dtype
    assert autocast.device == "cuda"
    if dtype is not None:
        assert autocast.fast_dtype == dtype
    assert isinstance(step.forward, torch._dynamo.eval_frame.OptimizedModule)
