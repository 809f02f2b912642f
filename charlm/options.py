"""A component's options written on a command line: ``key=value`` pairs and ``KIND[:key=value,...]``.

Values are TOML literals, as in job overrides (``k=40``, ``p=0.9``, ``name="x"``; anything
that is not TOML is a string). The result is plain data for ``charlm.config.resolve_component``,
which structures it into the plugin's attrs class with the same errors as a job file.
"""

from __future__ import annotations

from typing import Any

import attrs

from charlm.config import parse_override
from charlm.errors import ConfigError, UsageError


def parse_options(pairs: list[str], what: str, example: str) -> dict[str, Any]:
    """``["group_size=32"]`` -> ``{"group_size": 32}``; ``what`` and ``example`` go into errors."""
    options = {}
    for text in pairs:
        key, sep, _ = text.partition("=")
        if not sep or not key.strip() or "." in key:
            raise ConfigError(f"{what} option {text!r}: expected key=value, e.g. {example}")
        options[key.strip()] = parse_override(text)[1]
    return options


def parse_component(text: str, kind: str, example: str) -> dict[str, Any]:
    """``"top_k:k=40,min_keep=2"`` -> ``{"kind": "top_k", "k": 40, "min_keep": 2}``.

    A piece without ``=`` continues the value before it, so a TOML array such as
    ``weights=[1, 2]`` survives the split on commas.
    """
    name, _, rest = text.partition(":")
    if not name.strip():
        raise ConfigError(f"{kind} {text!r}: expected KIND[:key=value,...], e.g. {example}")
    pairs: list[str] = []
    for piece in rest.split(",") if rest.strip() else []:
        if "=" not in piece and pairs:
            pairs[-1] += "," + piece
        else:
            pairs.append(piece)
    return {"kind": name.strip(), **parse_options(pairs, f"{kind} {name.strip()!r}", example)}


def typed_options(cls, values: dict[str, str], what: str):
    """Text values (``key=value`` flags) -> an attrs options class of int/float/str fields;
    an unknown key or a value of the wrong type is a usage error naming the ``what`` option."""
    fields = {f.name: f.type for f in attrs.fields(cls)}
    typed = {}
    for key, value in values.items():
        if key not in fields:
            raise UsageError(f"unknown {what} option {key!r} (known: {', '.join(fields)})")
        kind = {"float": float, "int": int}.get(fields[key], str)
        try:
            typed[key] = kind(value)
        except ValueError:
            raise UsageError(f"{what} option {key}: {value!r} is not a valid {kind.__name__}") from None
    return cls(**typed)
