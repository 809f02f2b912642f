"""What the benchmarks share: the micro job (charlm/recipes/micro.toml) and the ``--threads`` flag."""

from __future__ import annotations

import argparse

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
