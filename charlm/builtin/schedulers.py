"""Learning-rate schedules: pure functions of (step, progress), so resume needs no state.

``progress`` is the fraction of the run done, in steps or in wall-clock time when the job
has a ``max_time`` budget. Warmup is counted in steps.
"""

import math

import attrs

import charlm
from charlm.validators import in_range, non_negative


def _warmup(step: int, warmup_steps: int) -> float:
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


@attrs.define
class ConstantConfig:
    warmup_steps: int = attrs.field(default=0, validator=non_negative)


@attrs.define
class CosineConfig:
    warmup_steps: int = attrs.field(default=100, validator=non_negative)
    min_lr_ratio: float = attrs.field(default=0.1, validator=in_range(0.0, 1.0))


@attrs.define
class WSDConfig:
    warmup_steps: int = attrs.field(default=100, validator=non_negative)
    decay_fraction: float = attrs.field(default=0.4, validator=in_range(0.0, 1.0))
    min_lr_ratio: float = attrs.field(default=0.0, validator=in_range(0.0, 1.0))


def constant(cfg: ConstantConfig):
    def schedule(step: int, progress: float) -> float:
        return _warmup(step, cfg.warmup_steps)

    return schedule


def cosine(cfg: CosineConfig):
    def schedule(step: int, progress: float) -> float:
        p = min(max(progress, 0.0), 1.0)
        decay = cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p))
        return _warmup(step, cfg.warmup_steps) * decay

    return schedule


def wsd(cfg: WSDConfig):
    """Warmup, a stable plateau, then a linear cooldown over the last ``decay_fraction``."""

    def schedule(step: int, progress: float) -> float:
        p = min(max(progress, 0.0), 1.0)
        start = 1.0 - cfg.decay_fraction
        if p <= start or cfg.decay_fraction == 0:
            decay = 1.0
        else:
            decay = 1.0 - (1 - cfg.min_lr_ratio) * (p - start) / cfg.decay_fraction
        return _warmup(step, cfg.warmup_steps) * decay

    return schedule


@charlm.hookimpl
def register_schedulers(register):
    register("cosine", cosine, config=CosineConfig, help="linear warmup, cosine decay to min_lr_ratio")
    register("constant", constant, config=ConstantConfig, help="linear warmup, then constant")
    register("wsd", wsd, config=WSDConfig, help="warmup-stable-decay: linear cooldown over the last part")
