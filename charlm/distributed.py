"""torchrun / torch.distributed set-up: one process per device, and the few collectives the loop needs.

Under ``torchrun`` (or any launcher that sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT) the job joins a process group: gloo on CPU, nccl on CUDA. Without them it runs as
a single process and nothing here touches torch.distributed.

Every collective waits at most ``distributed.timeout_s`` for its peers: a rank that died or
hangs makes the others fail with one line (``peer_failures``) instead of waiting forever.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import sys
import time

import attrs
import torch
import torch.distributed as dist

from charlm.errors import CharLMError, first_line


class PeerLost(CharLMError):
    """A collective failed or timed out: another process of the job died, hangs or cannot be reached."""


@attrs.frozen
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device, timeout_s: float = 600.0) -> tuple[DistInfo, torch.device]:
    """Join the process group when launched by torchrun; returns this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistInfo(), device
    info = DistInfo(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    device = rank_device(device, info)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        timeout = datetime.timedelta(seconds=timeout_s)
        with peer_failures():
            dist.init_process_group(
                backend=backend(device),
                timeout=timeout,
                **_attempt_store(info, timeout),
            )
    return info, device


def rank_device(device: torch.device, info: DistInfo) -> torch.device:
    """One CUDA device per process (``cuda:LOCAL_RANK``); CPU and MPS processes share theirs."""
    return torch.device("cuda", info.local_rank) if device.type == "cuda" else device


def backend(device: torch.device) -> str:
    """nccl between CUDA devices, gloo for everything else."""
    return "nccl" if device.type == "cuda" else "gloo"


def _attempt_store(info: DistInfo, timeout: datetime.timedelta) -> dict:
    """Under torchrun the workers share its agent's store, and keys that an earlier attempt wrote
    survive an elastic restart (pytorch/pytorch#135712): a restarted rank could then read a dead
    peer's address and never connect. Each attempt gets keys of its own."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return {}
    agent = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), info.world_size, is_master=False, timeout=timeout)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return {"store": dist.PrefixStore(f"charlm/attempt_{attempt}/", agent), "rank": info.rank, "world_size": info.world_size}


@contextlib.contextmanager
def peer_failures():
    """Turn a failed or timed-out collective into ``PeerLost``: one line, exit 1."""
    try:
        yield
    except dist.DistError as exc:
        raise PeerLost(f"distributed: {_collective_failure(exc)}; another process of the job died or hangs") from None
    except RuntimeError as exc:  # gloo reports a lost peer as a plain RuntimeError
        if not _is_gloo_failure(exc):
            raise
        raise PeerLost(f"distributed: {_collective_failure(exc)}; another process of the job died or hangs") from None


def _is_gloo_failure(exc: RuntimeError) -> bool:
    message = str(exc)
    return "gloo/" in message and any(word in message for word in ("Connection", "Timed out", "timed out", "error"))


def _collective_failure(exc: BaseException) -> str:
    """gloo's "[.../pair.cc:537] Read error [127.0.0.1]:61646: Connection reset by peer. This is..." -> its first sentence."""
    line = re.sub(r"^\[[^\]]*\]\s*", "", first_line(exc))
    return line.split(". ")[0][:200]


@contextlib.contextmanager
def no_sync(module: torch.nn.Module):
    """Keep this micro-step's gradients local (reduced with the last one's): DDP's ``no_sync``, FSDP2's switch."""
    module = getattr(module, "_orig_mod", module)  # under torch.compile
    if not hasattr(module, "set_requires_gradient_sync"):
        with module.no_sync():
            yield
        return
    module.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        module.set_requires_gradient_sync(True)


def from_main(value, info: DistInfo):
    """Rank 0's ``value`` on every rank: decisions that must be one (e.g. what is on disk)."""
    if not info.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _all_reduce(t: torch.Tensor, op=dist.ReduceOp.SUM) -> torch.Tensor:
    """``dist.all_reduce(t)``, returning once the backend has let go of ``t``.

    gloo's worker thread may drop its reference to ``t`` after the collective returns, and that
    drop also releases a reference to ``t``'s Python object, which needs the GIL. A rank that
    ends right after its last collective (``charlm eval`` under torchrun) aborted at exit, in
    8 of 20 runs here: the worker, still waiting for the GIL, is unwound by the finalizing
    interpreter ("terminate called without an active exception"). Sleeping 0 s hands the GIL
    over until both references are gone (0 aborts in 60 runs).
    """
    alone = sys.getrefcount(t)  # while only Python holds t
    dist.all_reduce(t, op=op)
    deadline = time.monotonic() + 1.0
    # the worker's reference to the tensor, then (taken under the GIL) the one to its Python object
    while (t._use_count() > 1 or sys.getrefcount(t) > alone) and time.monotonic() < deadline:
        time.sleep(0)
    return t


def all_reduce_mean(value: float, info: DistInfo, device: torch.device) -> float:
    if not info.enabled:
        return value
    t = _all_reduce(torch.tensor([value], dtype=torch.float64, device=device))
    return t.item() / info.world_size


def all_reduce_sum(value: float, info: DistInfo, device: torch.device) -> float:
    """The float64 sum of ``value`` over ranks."""
    if not info.enabled:
        return value
    return _all_reduce(torch.tensor([value], dtype=torch.float64, device=device)).item()


def any_rank(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every rank when it is true on one (so all ranks stop together)."""
    if not info.enabled:
        return flag
    return bool(_all_reduce(torch.tensor([int(flag)], device=device), op=dist.ReduceOp.MAX).item())


def shard(n: int, info: DistInfo) -> slice:
    """This rank's contiguous share of ``n`` items; shares differ in size by at most one."""
    base, extra = divmod(n, info.world_size)
    start = info.rank * base + min(info.rank, extra)
    return slice(start, start + base + (info.rank < extra))


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
