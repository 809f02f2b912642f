"""The signature of a factory named as ``"module:attr"``, read from its module's source.

``charlm config validate`` checks that each component's factory can be called as the core
will call it (``charlm.config.check_factory``), as ``charlm run`` does before it builds
anything. A factory named by its path is imported only when it is built, because its module
imports torch; importing it to inspect its signature would make ``validate`` as slow as a
run. Its ``def`` says the same without running it: this module parses the source with
``ast`` and turns the parameters of the function (or of the class's ``__init__``) into an
``inspect.Signature``. Declaring the signature in the ``register`` call instead would be a
second copy that can drift from the code.

Where the source shows no signature (no source, a name bound by assignment, a class whose
``__init__`` is inherited or generated), there is none to check: the call itself will tell.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import inspect

Definition = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


def source_signature(path: str) -> inspect.Signature | None:
    """The signature of ``"module:attr"`` as its source declares it; None when it does not show one."""
    module, _, attr = path.partition(":")
    node = _definitions(module).get(attr)
    if isinstance(node, ast.ClassDef):
        init = next((n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
        return None if init is None else _signature(init.args, skip_self=True)
    return None if node is None else _signature(node.args)


@functools.cache
def _definitions(module: str) -> dict[str, Definition]:
    """The functions and classes defined at the top of ``module`` (the last definition of a name wins)."""
    spec = importlib.util.find_spec(module)
    get_source = getattr(spec.loader, "get_source", None) if spec is not None else None
    source = get_source(module) if get_source is not None else None
    if source is None:
        return {}
    definitions = {}
    for node in ast.parse(source).body:
        if isinstance(node, Definition):
            definitions[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):  # a name rebound later: not a def any more
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    definitions.pop(target.id, None)
    return definitions


def _signature(args: ast.arguments, skip_self: bool = False) -> inspect.Signature:
    P = inspect.Parameter
    positional = [(a.arg, P.POSITIONAL_ONLY) for a in args.posonlyargs]
    positional += [(a.arg, P.POSITIONAL_OR_KEYWORD) for a in args.args]
    defaulted = [False] * (len(positional) - len(args.defaults)) + [True] * len(args.defaults)
    # a default's value does not matter for binding: ... stands for it
    params = [P(name, kind, default=... if has else P.empty) for (name, kind), has in zip(positional, defaulted)]
    params = params[1:] if skip_self else params
    if args.vararg:
        params.append(P(args.vararg.arg, P.VAR_POSITIONAL))
    for arg, default in zip(args.kwonlyargs, args.kw_defaults):
        params.append(P(arg.arg, P.KEYWORD_ONLY, default=P.empty if default is None else ...))
    if args.kwarg:
        params.append(P(args.kwarg.arg, P.VAR_KEYWORD))
    return inspect.Signature(params)
