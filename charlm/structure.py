"""Plain data (TOML/YAML tables) -> attrs config classes, strictly, on a cattrs ``Converter``.

cattrs does the walking: attrs classes field by field, with ``forbid_extra_keys`` and
detailed validation, which tags each failure with the field or index it came from. The
hooks here add what a job file promises and cattrs does not: no coercion ("false" is not
a bool, 2.9 is not an int, true is not an int), a component table resolved by its
``kind`` into the options class its plugin registered, and one error as one line,
``model.layers[2].d_state: must be > 0, got 0``, instead of an exception group.
"""

from __future__ import annotations

import contextlib
import difflib
import math
import types
import typing
from typing import Annotated, Any, Literal, Union

import attrs
import cattrs
from cattrs.errors import (
    AttributeValidationNote,
    BaseValidationError,
    ClassValidationError,
    ForbiddenExtraKeysError,
    IterableValidationError,
    IterableValidationNote,
)
from cattrs.gen import make_dict_structure_fn, override

from charlm.errors import CharLMError, ConfigError
from charlm.registry import get_registry

INT64 = (-(2**63), 2**63 - 1)  # every integer a job holds ends up in torch or numpy


@attrs.define
class ComponentSpec:
    """A component by name, with its plugin's structured options (``None`` when it has none).

    ``path`` is the dotted key it was read from (``model.layers[2]``), so that errors raised
    later, when the component is built, can name the key to fix.
    """

    kind: str
    options: Any = None
    path: str = attrs.field(default="", eq=False, repr=False)


def of_kind(kind: str) -> Any:
    """The type of a field holding a component of ``kind`` (``of_kind("block")``)."""
    return Annotated[ComponentSpec, kind]


def _component_kind(tp: Any) -> str | None:
    if typing.get_origin(tp) is Annotated and typing.get_args(tp)[0] is ComponentSpec:
        return typing.get_args(tp)[1]
    return None


# ---------------------------------------------------------------- leaves

# cattrs' own int/float/bool/str hooks call the type (int(2.9) == 2, bool("false") is True):
# these refuse instead.


def _int(value: Any, _) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {value!r}")
    if not INT64[0] <= value <= INT64[1]:
        raise ValueError(f"{value} does not fit in 64 bits")
    return value


def _float(value: Any, _) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value!r}")
    return float(value)


def _bool(value: Any, _) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _str(value: Any, _) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in args if a is not type(None))
    if origin is Literal:
        return " or ".join(map(repr, args))
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    return names.get(tp) or getattr(tp, "__name__", str(tp))


def _literal(value: Any, tp: Any) -> Any:
    args = typing.get_args(tp)
    # `type(value)` too: 1 == True, so 1 would otherwise pass for Literal[True]
    if value not in args or type(value) not in {type(a) for a in args}:
        raise ValueError(f"expected one of {', '.join(map(repr, args))}, got {value!r}")
    return value


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _union(_, converter: cattrs.Converter):
    # cattrs structures unions of attrs classes by their fields and refuses most others; a job
    # mixes primitives and literals (`bool | Literal["auto"]`), so try each member in turn.
    def structure(value: Any, tp: Any) -> Any:
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None and len(members) < len(typing.get_args(tp)):
            return None
        errors = []
        for member in members:
            try:
                return converter.structure(value, member)
            except (ValueError, TypeError, BaseValidationError, CharLMError) as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise ValueError(f"{value!r} is not valid here (expected {describe(tp)})")

    return structure


# ---------------------------------------------------------------- containers


def _items(converter: cattrs.Converter, values: list, types_: list, tp: Any) -> list:
    """Structure each item; failures are tagged with their index, as cattrs tags fields."""
    items, errors = [], []
    for i, (value, item_tp) in enumerate(zip(values, types_)):
        try:
            items.append(converter.structure(value, item_tp))
        except Exception as exc:
            exc.__notes__ = [*getattr(exc, "__notes__", []), IterableValidationNote(f"@ [{i}]", i, item_tp)]
            errors.append(exc)
    if errors:
        raise IterableValidationError(f"while structuring {tp}", errors, tp)
    return items


def _sequence(_, converter: cattrs.Converter):
    # cattrs would iterate a string as a list of characters and zip a tuple to any length
    def structure(value: Any, tp: Any) -> Any:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"expected a list, got {value!r}")
        origin, args = typing.get_origin(tp) or tp, typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ValueError(f"expected {len(args)} items, got {len(value)}")
            item_types = list(args)
        else:
            item_types = [args[0] if args else Any] * len(value)
        items = _items(converter, list(value), item_types, tp)
        return items if origin is list else tuple(items)

    return structure


def _is_sequence(tp: Any) -> bool:
    return (typing.get_origin(tp) or tp) in (list, tuple)


def _mapping(_, converter: cattrs.Converter):
    def structure(value: Any, tp: Any) -> dict:
        if not isinstance(value, dict):
            raise ValueError(f"expected a table, got {value!r}")
        item_tp = typing.get_args(tp)[1] if typing.get_args(tp) else Any
        errors, out = [], {}
        for key, item in value.items():
            try:
                out[key] = converter.structure(item, item_tp)
            except Exception as exc:
                exc.__notes__ = [*getattr(exc, "__notes__", []), IterableValidationNote(f"@ [{key!r}]", str(key), item_tp)]
                errors.append(exc)
        if errors:
            raise IterableValidationError(f"while structuring {tp}", errors, tp)
        return out

    return structure


def _is_mapping(tp: Any) -> bool:
    return (typing.get_origin(tp) or tp) is dict


# ---------------------------------------------------------------- attrs classes and components


def _default(field: attrs.Attribute) -> Any:
    return field.default.factory() if isinstance(field.default, attrs.Factory) else field.default


def _attrs_class(cls: type, converter: cattrs.Converter):
    """cattrs' generated hook for ``cls``, with three additions around it (see below)."""
    fields = attrs.fields(cls)
    hints = typing.get_type_hints(cls, include_extras=True)
    # attrs runs validators in __init__, after every field is read, and the error does not say
    # which field failed: run each field's validator as that field is structured, so that
    # cattrs tags the error with the field (__init__ runs them again, harmlessly).
    validated = {f.name: override(struct_hook=_validated(f, hints[f.name], converter)) for f in fields if f.validator}
    structure_fields = make_dict_structure_fn(
        cls, converter, _cattrs_forbid_extra_keys=True, _cattrs_detailed_validation=True, **validated
    )
    default_kinds = {f.name: _default(f).kind for f in fields if isinstance(_default(f), ComponentSpec)}

    def structure(value: Any, _) -> Any:
        if not isinstance(value, dict):
            raise ValueError(f"expected a table, got {value!r}")
        value = dict(value)
        for name, kind in default_kinds.items():
            if name not in value:  # a default component still gets its plugin's default options
                value[name] = kind
            elif isinstance(value[name], dict) and "kind" not in value[name]:
                value[name] = {"kind": kind, **value[name]}  # options for the default component
        return structure_fields(value, cls)

    return structure


def _validated(field: attrs.Attribute, tp: Any, converter: cattrs.Converter):
    def structure(value: Any, _) -> Any:
        item = converter.structure(value, tp)
        field.validator(None, field, item)
        return item

    return structure


def _component(_, converter: cattrs.Converter):
    def structure(value: Any, tp: Any) -> ComponentSpec:
        kind = _component_kind(tp)
        if isinstance(value, ComponentSpec):
            value = unstructure(value)
        if isinstance(value, str):
            value = {"kind": value}
        if not isinstance(value, dict) or "kind" not in value:
            raise ValueError(f'expected the name of a {kind} or a table with "kind", got {value!r}')
        name = _at("kind", lambda: _str(value["kind"], str))
        comp = get_registry().get(kind, name)
        options = {k: v for k, v in value.items() if k != "kind"}
        if comp.config is None:
            if options:
                raise ValueError(f"{kind} {comp.name!r} takes no options, got {', '.join(options)}")
            return ComponentSpec(comp.name, None)
        return ComponentSpec(comp.name, converter.structure(options, comp.config))

    return structure


def _at(key: str, read):
    """``read()``, with a failure reported at ``key`` below the current path."""
    try:
        return read()
    except ValueError as exc:
        exc.__notes__ = [AttributeValidationNote(f"@ {key}", key, None)]
        raise ClassValidationError(f"while reading {key}", [exc], ComponentSpec) from None


def make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
    for tp, hook in ((int, _int), (float, _float), (bool, _bool), (str, _str)):
        converter.register_structure_hook(tp, hook)
    converter.register_structure_hook_func(lambda tp: typing.get_origin(tp) is Literal, _literal)
    converter.register_structure_hook_factory(_is_union, _union)
    converter.register_structure_hook_factory(_is_sequence, _sequence)
    converter.register_structure_hook_factory(_is_mapping, _mapping)
    converter.register_structure_hook_factory(attrs.has, _attrs_class)
    converter.register_structure_hook_factory(lambda tp: _component_kind(tp) is not None, _component)
    return converter


_converter = make_converter()


# ---------------------------------------------------------------- errors as one line


def show_key(key: str) -> str:
    """A key as an error line shows it: escaped (``'a\\nb'``) when it holds control characters."""
    return key if key.isprintable() else repr(key)


@contextlib.contextmanager
def nesting_guard(where: str):
    """Parsers and cattrs recurse once per level: a value nested past Python's stack is a config error."""
    try:
        yield
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply") from None


def _join(path: str, key: str) -> str:
    key = show_key(str(key))
    return f"{path}.{key}" if path else key


def _below(path: str, exc: BaseException) -> str:
    """The path of ``exc``, from the note its parent attached (the last one)."""
    for note in reversed(getattr(exc, "__notes__", [])):
        if isinstance(note, AttributeValidationNote):
            return _join(path, note.name)
        if isinstance(note, IterableValidationNote):
            return f"{path}[{note.index}]" if isinstance(note.index, int) else _join(path, note.index)
    return path


def error_line(exc: BaseException, path: str) -> str:
    """The first failure in cattrs' tree of exceptions, as ``dotted.key: what is wrong``.

    cattrs reports every failure, as an exception group; a user fixes one at a time, so
    the first is shown, unknown keys before the rest (a typo explains the other errors).
    cattrs' ``transform_error`` writes ``invalid value for type, expected int @ $.model.n_layer``
    and has no "did you mean": the walk is ours.
    """
    if isinstance(exc, BaseValidationError):
        first = min(exc.exceptions, key=lambda e: not isinstance(e, ForbiddenExtraKeysError))
        return error_line(first, _below(path, first))
    if isinstance(exc, ForbiddenExtraKeysError):
        key = sorted(map(str, exc.extra_fields))[0]
        names = [f.name for f in attrs.fields(exc.cl)]
        close = difflib.get_close_matches(key, names, n=1)
        hint = f' (did you mean "{close[0]}"?)' if close else f" (known: {', '.join(names)})"
        return f"{_join(path, key)}: unknown key{hint}"
    if isinstance(exc, KeyError):
        return f"{path}: missing (required)"
    if isinstance(exc, (ValueError, TypeError, CharLMError)):
        return f"{path or 'config'}: {exc}"
    raise exc  # anything else is a bug, not a bad config


def structure(value: Any, tp: Any, path: str = "") -> Any:
    """``value`` structured into ``tp``; a ``ConfigError`` naming the dotted key if it does not fit."""
    get_registry()  # a plugin clash is the plugins' error, not one of whichever key met it first
    with nesting_guard(path or "config"):  # also around error_line: a message may show the value
        try:
            result = _converter.structure(value, tp)
        except (BaseValidationError, ForbiddenExtraKeysError, KeyError, ValueError, TypeError, CharLMError) as exc:
            raise ConfigError(error_line(exc, path)) from None
    _record_paths(result, path)
    return result


def _record_paths(obj: Any, path: str) -> None:
    if isinstance(obj, ComponentSpec):
        obj.path = path
        _record_paths(obj.options, path)
    elif attrs.has(type(obj)):
        for field in attrs.fields(type(obj)):
            _record_paths(getattr(obj, field.name), _join(path, field.name))
    elif isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            _record_paths(item, f"{path}[{i}]")


def unstructure(obj: Any) -> Any:
    """Plain data without ``None`` (TOML has no null); a component is ``{"kind": ..., **options}``."""
    if isinstance(obj, ComponentSpec):
        return {"kind": obj.kind, **(unstructure(obj.options) if obj.options is not None else {})}
    if attrs.has(type(obj)):
        values = ((f.name, getattr(obj, f.name)) for f in attrs.fields(type(obj)))
        return {name: unstructure(value) for name, value in values if value is not None}
    if isinstance(obj, (list, tuple)):
        return [unstructure(v) for v in obj]
    if isinstance(obj, dict):
        return {k: unstructure(v) for k, v in obj.items() if v is not None}
    return obj
