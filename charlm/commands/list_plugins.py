"""``charlm list-plugins [--json] [--verbose]``: what is installed, and what each plugin registered.

It loads the plugins but builds no component, so it imports no torch of its own. It still
works when two plugins register one name: the clash is listed, on both plugins and on stderr,
and the exit status is 0 (every other command that needs the plugins exits 2 on it).
"""

import json
import sys

import attrs

from charlm.registry import Component, Registry, get_registry

EPILOG = """\
--json always includes each component's options (name, type, default, required), so a tool
needs no second call; --verbose adds them to the text listing. A plugin that registers nothing
is marked so, and hooks that are never called (misnamed, or not marked @charlm.hookimpl) are
shown as warnings. A name clash is listed with both plugins and exits 0; any other command
exits 2 until --disable-plugins (or CHARLM_DISABLE_PLUGINS) names one of the two."""


def add_parser(sub):
    parser = sub.add_parser("list-plugins", help="list installed plugins and their components", epilog=EPILOG)
    parser.add_argument("--json", action="store_true", help="print JSON (components always with their options)")
    parser.add_argument("--verbose", "-v", action="store_true", help="also list each component's options")
    parser.set_defaults(func=list_plugins)


def list_plugins(args) -> int:
    registry = get_registry(check_clashes=False)
    for clash in registry.clashes:
        print(f"warning: {clash.message()}", file=sys.stderr)
    if args.json:
        print(json.dumps([plugin_json(p, registry) for p in registry.plugins], indent=2))
        return 0
    for p in registry.plugins:
        print(f"{p.name}  ({p.distribution} {p.version}, {p.module})  [{p.status}]")
        if p.error:
            print(f"    error: {p.error}")
        for warning in p.warnings:
            print(f"    warning: {warning}")
        if p.registers_nothing:
            print("    (registers nothing)")
        for kind, comps in p.components.items():
            for c in comps:
                print(f"    {kind:<12} {c.name:<14} {c.help}{clash_note(c, registry)}")
                if args.verbose:
                    for option in options(c):
                        default = "required" if option["required"] else f"default {option['default']!r}"
                        print(f"        {option['name']}: {option['type']}  ({default})")
    return 0


def plugin_json(p, registry: Registry) -> dict:
    return {
        "name": p.name,
        "distribution": p.distribution,
        "version": p.version,
        "module": p.module,
        "status": p.status,
        "error": p.error,
        "warnings": p.warnings,
        "registers_nothing": p.registers_nothing,
        "components": {
            kind: [{"name": c.name, "help": c.help, "options": options(c)} for c in comps]
            for kind, comps in p.components.items()
        },
        "clashes": [
            {"kind": c.kind, "name": c.name, "plugins": [c.first, c.second]}
            for c in registry.clashes
            if p.name in (c.first, c.second)
        ],
    }


def clash_note(comp: Component, registry: Registry) -> str:
    others = [
        other
        for c in registry.clashes
        if (c.kind, c.name) == (comp.kind, comp.name) and comp.plugin in (c.first, c.second)
        for other in (c.first, c.second)
        if other != comp.plugin
    ]
    return f"  [clash: also registered by {', '.join(map(repr, others))}]" if others else ""


def options(comp: Component) -> list[dict]:
    """The fields of a component's attrs options class: name, type (as annotated), default."""
    if comp.config is None:
        return []
    return [
        {"name": f.name, "type": type_name(f.type), "required": f.default is attrs.NOTHING, "default": default_value(f.default)}
        for f in attrs.fields(comp.config)
    ]


def type_name(tp) -> str:
    if tp is None or isinstance(tp, str):  # unannotated, or a string (`from __future__ import annotations`)
        return tp or "?"
    return tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")


def default_value(default):
    """A default as plain JSON data (None when required)."""
    if default is attrs.NOTHING:
        return None
    if isinstance(default, attrs.Factory):
        if default.takes_self:
            return None
        default = default.factory()
    if attrs.has(type(default)):  # nested options (muon's adamw)
        default = attrs.asdict(default)
    try:
        json.dumps(default)
    except TypeError:
        return repr(default)
    return default
