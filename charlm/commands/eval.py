"""``charlm eval``: not built yet."""

from charlm.errors import CharLMError


def add_parser(sub):
    parser = sub.add_parser("eval", help="(not built yet)")
    parser.set_defaults(func=not_built)


def not_built(args) -> int:
    raise CharLMError("charlm eval is not built yet")
