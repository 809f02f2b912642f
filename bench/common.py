"""What the benchmarks share: the micro job (charlm/recipes/micro.toml), the ``--threads`` flag
and the CPU's description."""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

from charlm.config import JobConfig, load_config
from charlm.recipes import find_recipes

MICRO = find_recipes()["micro"].path
MICRO_NAME = "charlm/recipes/micro.toml"


def micro_job(*overrides: str) -> JobConfig:
    """The micro recipe on the CPU, with dotted ``key=value`` overrides."""
    return load_config(MICRO, ['device="cpu"', *overrides])


def micro_model(job: JobConfig | None = None):
    """``(job, model)``: the micro job's model with seeded random weights, in eval mode
    (the benchmarks time speed, which does not depend on training)."""
    import torch

    from charlm.model import ByteLM

    job = job or micro_job()
    torch.manual_seed(0)
    return job, ByteLM(job.model, job.seq_len).eval()


def add_threads_flag(parser: argparse.ArgumentParser, default: int | None = None) -> None:
    what = f"default {default}" if default else "default: torch's choice"
    parser.add_argument("--threads", type=int, default=default, help=f"torch threads ({what})")


def use_threads(threads: int | None) -> None:
    """Apply ``--threads`` (None keeps torch's choice)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def cpu_description() -> str:
    """The CPU's model name and whether it has bf16 units (what ``precision = "auto"`` and
    Muon's iterations depend on), e.g. "AMD EPYC (no bf16 units)"; on Linux from /proc/cpuinfo."""
    info = Path("/proc/cpuinfo")
    fields = dict(line.split(":", 1) for line in info.read_text().splitlines() if ":" in line) if info.exists() else {}
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    name = fields.get("model name") or platform.processor() or platform.machine()
    flags = set(fields.get("flags", "").split())
    units = [flag for flag in ("amx_bf16", "avx512_bf16") if flag in flags]
    return f"{name} ({', '.join(units) if units else 'no bf16 units'})" if fields else name
