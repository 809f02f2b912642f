"""``charlm plot``: not built yet."""

from charlm.errors import CharLMError


def add_parser(sub):
    parser = sub.add_parser("plot", help="(not built yet)")
    parser.set_defaults(func=not_built)


def not_built(args) -> int:
    raise CharLMError("charlm plot is not built yet")
