"""attrs validators for component options, shared by the core and plugins.

Messages leave out the key: the config loader prefixes its dotted path
(``config error: model.block.d_state: must be > 0, got 0``).
"""

from __future__ import annotations


def positive(instance, attribute, value) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"must be > 0, got {value}")


def non_negative(instance, attribute, value) -> None:
    if value is not None and value < 0:
        raise ValueError(f"must be >= 0, got {value}")


def in_range(low: float, high: float, low_open: bool = False):
    """``low <= value <= high`` (``low < value`` with ``low_open``)."""
    bracket = "(" if low_open else "["

    def check(instance, attribute, value) -> None:
        if value is None:
            return
        if not ((low < value) if low_open else (low <= value)) or value > high:
            raise ValueError(f"must be in {bracket}{low}, {high}], got {value}")

    return check
