"""``charlm recipes [--json]``: the job files that charlm and its plugins ship, by name."""

import json

from charlm.recipes import find_recipes


def add_parser(sub):
    parser = sub.add_parser("recipes", help="list the recipes (`charlm run NAME`) of charlm and its plugins")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=list_recipes)


def list_recipes(args) -> int:
    recipes = find_recipes().values()
    if args.json:
        rows = [{"name": r.name, "distribution": r.distribution, "description": r.description,
                 "data": r.data_command, "path": str(r.path)} for r in recipes]
        print(json.dumps(rows, indent=2))
        return 0
    width = max((len(r.name) for r in recipes), default=0)
    dist_width = max((len(r.distribution) for r in recipes), default=0)
    for r in recipes:
        print(f"{r.name:<{width}}  {r.distribution:<{dist_width}}  {r.description}")
    return 0
