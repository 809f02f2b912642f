"""What a training run is at a step, and the checkpoint payload that holds it.

``TrainState`` is the loop's progress (step, budget clock, tokens, data position, RNG). With
the model, the optimizer, the resolved job and the versions it is the whole checkpoint:
``to_payload`` writes its keys and ``from_payload`` reads them, nowhere else. The keys are
those of checkpoint format version 1 since its first release, so every version-1
checkpoint resumes.
"""

from __future__ import annotations

import platform
from pathlib import Path

import attrs
import torch

import charlm
from charlm.checkpoint import FORMAT_VERSION
from charlm.config import JobConfig, component_specs
from charlm.errors import CharLMError, ConfigError
from charlm.registry import get_registry

PAYLOAD_KEYS = ("model", "optimizer", "step", "data", "elapsed_s", "tokens", "rng", "config", "versions")


def plugin_versions(job: JobConfig) -> dict[str, str]:
    """The payload's ``versions``: charlm, torch, Python and each plugin that provides a component of the job."""
    registry = get_registry()
    by_name = {p.name: p for p in registry.plugins}
    versions = {"charlm": charlm.__version__, "torch": str(torch.__version__), "python": platform.python_version()}
    for _, kind, spec in component_specs(job):
        plugin = by_name[registry.get(kind, spec.kind).plugin]
        versions[f"plugin:{plugin.name}"] = f"{plugin.distribution} {plugin.version}"
    return versions


@attrs.define
class TrainState:
    step: int = 0
    elapsed_s: float = 0.0  # the budget clock: training and compilation, not validation or checkpoints
    tokens: int = 0  # bytes trained on, all ranks together
    data: tuple[int, int] | dict = (0, 0)  # where the batch stream goes on: (epoch, k) or BatchLoader.state_dict()
    rng: dict | None = None  # charlm.checkpoint.capture_rng() at the step; None before any

    def progress(self, job: JobConfig) -> float:
        """The larger of the fractions of ``max_steps`` and ``max_time`` done, at most 1."""
        fractions = [0.0]
        if job.max_steps:
            fractions.append(self.step / job.max_steps)
        if job.max_time_s:
            fractions.append(self.elapsed_s / job.max_time_s)
        return min(1.0, max(fractions))

    def finished(self, job: JobConfig) -> bool:
        return (job.max_steps is not None and self.step >= job.max_steps) or (
            job.max_time_s is not None and self.elapsed_s >= job.max_time_s
        )

    def to_payload(self, model: torch.nn.Module, optimizer, config: dict, versions: dict) -> dict:
        return {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": self.step,
            "data": self.data,
            "elapsed_s": self.elapsed_s,
            "tokens": self.tokens,
            "rng": self.rng,
            "config": config,
            "versions": versions,
        }

    @classmethod
    def from_payload(cls, payload: dict, model: torch.nn.Module, optimizer, source: Path) -> TrainState:
        """Load the weights and optimizer state into ``model`` and ``optimizer``; the loop's state."""
        missing = [key for key in PAYLOAD_KEYS if key not in payload]
        if missing:
            raise CharLMError(
                f"{source}: checkpoint format version {payload.get('format_version')} lacks {', '.join(missing)}: "
                f"it cannot resume training (this charlm resumes version {FORMAT_VERSION} checkpoints of `charlm run`)"
            )
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        return cls(
            step=payload["step"],
            elapsed_s=payload["elapsed_s"],
            tokens=payload["tokens"],
            data=payload["data"],
            rng=payload["rng"],
        )


# What a resume may change: budgets, reporting, cadence, where and how fast it runs.
# Everything else (model, data, optimizer, schedule, precision, batch, seed, grad_clip...)
# would make the continued run a different run from the one the checkpoint started.
SAFE_KEYS = ("max_steps", "max_time", "out_dir", "device", "compile", "on_nonfinite", "data.num_workers", "data.verify")
SAFE_TABLES = ("logging.", "checkpoint.", "distributed.")  # distributed: how, not what, is computed


def flatten(tree: dict, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists stay values."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_resumable(saved: dict, current: dict, source: Path) -> list[str]:
    """Refuse a job that differs from the checkpoint's resolved job (``saved``) in a way that
    alters the run, naming every such dotted key; the safe changes, as ``key: old -> new``."""
    before, after = flatten(saved), flatten(current)
    changed = sorted(key for key in before.keys() | after.keys() if before.get(key) != after.get(key))
    unsafe = [key for key in changed if key not in SAFE_KEYS and not key.startswith(SAFE_TABLES)]
    # a component of another kind has other options: its kind says it all
    new_kinds = tuple(key[: -len("kind")] for key in unsafe if key.endswith(".kind"))
    unsafe = [key for key in unsafe if key.endswith(".kind") or not key.startswith(new_kinds)]
    if unsafe:
        diff = ", ".join(f"{key} {before.get(key)!r} -> {after.get(key)!r}" for key in unsafe)
        raise ConfigError(
            f"{', '.join(unsafe)}: the job differs from the checkpoint it resumes ({source}): {diff}; "
            f"only {', '.join(SAFE_KEYS + tuple(t + '*' for t in SAFE_TABLES))} may change"
        )
    return [f"{key}: {before.get(key)!r} -> {after.get(key)!r}" for key in changed]
