"""What a caller of ``charlm.generate`` chooses, as plain data: the sampler chain (``--sampler``
items or the shortcut flags) and the context policies.

It imports no torch, so that ``charlm generate --help`` offers these choices without it; the
sampling itself is ``charlm.generate``.
"""

from __future__ import annotations

from charlm.errors import UsageError

POLICIES = ("recompute", "sink", "error")  # what to keep when the window is full (charlm.generate.Window)
SHORTCUTS = ("temperature", "top_k", "top_p", "min_p")


def sampler_chain(sampler=None, *, temperature=None, top_k=None, top_p=None, min_p=None) -> list:
    """The chain as specs for ``resolve_component``: ``sampler`` itself, or the shortcuts.

    ``sampler`` is a list of sampler names, tables (``{"kind": "top_p", "p": 0.9}``) or
    strings in the form of ``--sampler`` (``"top_k:k=40"``), applied in order. Without it,
    the shortcuts make the chain temperature, top-k, top-p, min-p (temperature 0: greedy,
    default 1). Giving both is an error: a shortcut would otherwise be silently ignored.
    """
    from charlm.options import parse_component

    given = [name for name, value in zip(SHORTCUTS, (temperature, top_k, top_p, min_p)) if value is not None]
    if sampler is not None:
        if given:
            raise UsageError(
                f"give sampler=[...] or {', '.join(given)}, not both: put them in the chain, e.g."
                ' sampler=["temperature:value=0.8", "top_k:k=40"]'
            )
        items = [sampler] if isinstance(sampler, (str, dict)) else list(sampler)
        return [parse_component(item, "sampler", "top_k:k=40") if isinstance(item, str) else item for item in items]
    temperature = 1.0 if temperature is None else temperature
    if temperature < 0:
        raise UsageError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        return ["greedy"]
    chain = [{"kind": "temperature", "value": float(temperature)}] if temperature != 1.0 else []
    if top_k is not None:
        chain.append({"kind": "top_k", "k": top_k})
    if top_p is not None:
        chain.append({"kind": "top_p", "p": float(top_p)})
    if min_p is not None:
        chain.append({"kind": "min_p", "p": float(min_p)})
    return chain
