"""``charlm list-plugins [--json]``: what is installed, and what each plugin registered."""

import json

from charlm.registry import get_registry


def add_parser(sub):
    parser = sub.add_parser("list-plugins", help="list installed plugins and their components")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=list_plugins)


def list_plugins(args) -> int:
    registry = get_registry()
    if args.json:
        print(json.dumps([p.to_json() for p in registry.plugins], indent=2))
        return 0
    for p in registry.plugins:
        print(f"{p.name}  ({p.distribution} {p.version}, {p.module})  [{p.status}]")
        if p.error:
            print(f"    error: {p.error}")
        for kind, comps in p.components.items():
            for c in comps:
                print(f"    {kind:<12} {c.name:<14} {c.help}")
    return 0
