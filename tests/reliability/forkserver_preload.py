"""Imported once by crash injection's fork server, so that every forked ``charlm run`` starts
warm, in milliseconds: torch, ``torch._dynamo`` (``torch.optim`` imports it when the first
optimizer is built: ~2 s), the CLI and the training loop, and the measured matmul peak
(MFU's denominator: 0.5 s of matmuls, cached per process and so inherited by each fork).
"""

import torch
import torch._dynamo  # noqa: F401

import charlm.cli  # noqa: F401
import charlm.train  # noqa: F401
from charlm.perf import matmul_peak_flops

torch.set_num_threads(1)  # before any parallel op: a forked child must not inherit a thread pool
matmul_peak_flops("cpu", torch.float32)  # the key Trainer.start asks with
