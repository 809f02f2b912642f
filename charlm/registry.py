"""The plugin manager: built-in modules and entry points -> (kind, name) -> component.

The registry is the only way the core finds a component, and ``get_registry()`` is the one
way to reach it. Built-in plugins are listed in ``BUILTIN_MODULES`` and registered through
the same hooks as third-party ones, which come from the ``charlm`` entry-point group.

pluggy checks each plugin's hook signatures when it is registered and holds its hook
implementations; the registry calls one plugin's implementations at a time (taken from
``pm.hook.<name>.get_hookimpls()``), so that each registration is credited to its plugin
and a plugin that fails adds nothing. We walk the entry points ourselves rather than call
``pm.load_setuptools_entrypoints``: pluggy's loader drops a second entry point of the same
name and stops at the first plugin that fails to import.

Hook hygiene, plugin by plugin (pluggy's ``check_pending()`` would stop at the first): a
function marked ``@charlm.hookimpl`` whose name no hook has, or a ``register_*`` function
left unmarked, is never called; it is a warning naming the plugin and the function (an
error for a built-in). Two plugins registering one name is a clash: ``get_registry()``
raises it naming both, while ``charlm list-plugins`` still lists everything, clash included.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import warnings
from collections.abc import Callable
from typing import Any

import attrs
import pluggy

from charlm import __version__, hookspecs
from charlm.errors import PluginError
from charlm.source_signature import source_signature

ENTRY_POINT_GROUP = "charlm"
DISABLE_ENV = "CHARLM_DISABLE_PLUGINS"
BUILTIN_DISTRIBUTION = "charlm-toolkit"  # the distribution that ships charlm.builtin

# kind -> hook name (public API)
KINDS: dict[str, str] = {
    "block": "register_blocks",
    "attention": "register_attentions",
    "positional": "register_positional_encodings",
    "mlp": "register_mlps",
    "norm": "register_norms",
    "sampler": "register_samplers",
    "scheduler": "register_schedulers",
    "optimizer": "register_optimizers",
    "exporter": "register_exporters",
    "data_source": "register_data_sources",
}

# name -> module of the plugins that ship with charlm
BUILTIN_MODULES: dict[str, str] = {
    "schedulers": "charlm.builtin.schedulers",
    "data_sources": "charlm.builtin.data_sources",
    "transformer": "charlm.builtin.transformer",
    "attention": "charlm.builtin.attention",
    "positional": "charlm.builtin.positional",
    "mlp": "charlm.builtin.mlp",
    "norm": "charlm.builtin.norm",
    "optimizers": "charlm.builtin.optimizers",
    "samplers": "charlm.builtin.samplers",
    "exporters": "charlm.builtin.exporters",
}

# Components that a known plugin distribution provides, for "is X installed?" hints.
KNOWN_PROVIDERS: dict[tuple[str, str], str] = {
    ("block", "ssm"): "charlm-ssm",
    ("exporter", "onnx"): "charlm-onnx",
    ("data_source", "dvc"): "charlm-dvc",
}


class PluginLoadWarning(UserWarning):
    """A plugin failed to load, or has a hook that is never called; the others were loaded."""


@attrs.frozen
class Component:
    kind: str
    name: str
    factory: Callable[..., Any]
    config: type | None
    help: str
    plugin: str


@attrs.frozen(repr=False)
class LazyFactory:
    """A factory registered as ``"module:attr"`` (as entry points name objects), imported when
    first called: a plugin module that only registers options classes then imports no torch,
    so ``list-plugins`` and ``config validate`` stay fast.

    ``inspect.signature`` sees the factory's own signature, read from its source without
    importing it (``charlm.source_signature``), so that ``validate`` checks it as ``run`` does.
    """

    path: str

    def __call__(self, *args, **kwargs):
        module, _, attr = self.path.partition(":")
        return getattr(importlib.import_module(module), attr)(*args, **kwargs)

    @property
    def __signature__(self) -> inspect.Signature | None:  # None: inspect falls back to __call__'s
        return source_signature(self.path)

    def __repr__(self) -> str:  # how errors name it
        return self.path


@attrs.frozen
class Clash:
    """One name of one kind registered by two plugins (the first keeps it)."""

    kind: str
    name: str
    first: str
    second: str

    def message(self) -> str:
        return (
            f"{self.kind} {self.name!r} is registered by two plugins: {self.first!r} and {self.second!r}; "
            f"disable one with --disable-plugins {self.second} (or {DISABLE_ENV}={self.second})"
        )


@attrs.define
class PluginInfo:
    name: str
    module: str
    distribution: str
    version: str
    status: str = "ok"  # ok | failed | disabled
    error: str | None = None
    warnings: list[str] = attrs.Factory(list)  # hooks that are never called
    components: dict[str, list[Component]] = attrs.Factory(dict)

    @property
    def registers_nothing(self) -> bool:
        return self.status == "ok" and not self.components


def disabled_from_env() -> set[str]:
    return {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}


class Registry:
    """Every installed component, by kind and name.

    A name clash does not stop loading: it is recorded in ``clashes`` (the first plugin keeps
    the name) and raised by ``check_clashes()``, which ``get_registry()`` calls.
    """

    def __init__(self, disabled: set[str] | frozenset[str] = frozenset(), entry_points: bool = True):
        self.disabled = set(disabled)
        self.plugins: list[PluginInfo] = []
        self.clashes: list[Clash] = []
        self._components: dict[str, dict[str, Component]] = {kind: {} for kind in KINDS}
        self._pm = pluggy.PluginManager("charlm")
        self._pm.add_hookspecs(hookspecs)
        for name, module in BUILTIN_MODULES.items():
            self._load(name, module, BUILTIN_DISTRIBUTION, __version__)
        if entry_points:
            for ep in _charlm_entry_points():
                dist = ep.dist.name if ep.dist else "?"
                version = ep.dist.version if ep.dist else "?"
                self._load(ep.name, ep.value, dist, version)

    def _load(self, name: str, module_name: str, dist: str, version: str) -> None:
        info = PluginInfo(name=name, module=module_name, distribution=dist, version=version)
        self.plugins.append(info)
        if name in self.disabled or dist in self.disabled:
            info.status = "disabled"
            return
        where = f"plugin {name!r} ({dist} {version}, {module_name})"
        try:
            module = importlib.import_module(module_name)
            self._pm.register(module, name=f"{dist}:{name}")
            found = self._call_hooks(module, name)
        except Exception as exc:  # a broken plugin must not take the others down
            info.status, info.error = "failed", f"{type(exc).__name__}: {exc}"
            warnings.warn(f"{where} failed to load: {info.error}", PluginLoadWarning, stacklevel=2)
            return
        info.warnings = self._uncalled_hooks(module)
        if info.warnings and dist == BUILTIN_DISTRIBUTION:
            raise PluginError(f"built-in {where}: {info.warnings[0]}")
        for problem in info.warnings:
            warnings.warn(f"{where}: {problem}", PluginLoadWarning, stacklevel=2)
        for comp in found:
            info.components.setdefault(comp.kind, []).append(comp)
            self._add(comp)

    def _call_hooks(self, module, plugin: str) -> list[Component]:
        """Call one plugin's hook implementations, as pluggy holds them, and return what they
        registered (nothing is added yet, so a hook that raises leaves no trace)."""
        found: list[Component] = []
        for kind, hook_name in KINDS.items():

            def register(name, factory, config=None, help="", _kind=kind, _hook=hook_name):
                if not isinstance(name, str) or not name:
                    raise TypeError(f"{_hook}: a component name must be a non-empty string, got {name!r}")
                if config is not None and not attrs.has(config):
                    raise TypeError(f"{_hook}: config for {name!r} must be an attrs class")
                if isinstance(factory, str):
                    factory = _lazy_factory(factory, f"{_hook}: factory of {name!r}")
                elif not callable(factory):
                    raise TypeError(f"{_hook}: factory of {name!r} must be callable or \"module:attr\", got {factory!r}")
                found.append(Component(_kind, name, factory, config, help, plugin))

            args = {"register": register}
            for impl in getattr(self._pm.hook, hook_name).get_hookimpls():
                if impl.plugin is module:  # as pluggy calls it: an impl may take fewer arguments
                    impl.function(*(args[arg] for arg in impl.argnames))
        return found

    def _uncalled_hooks(self, module) -> list[str]:
        """pluggy's ``check_pending()`` for one plugin, plus ``register_*`` functions left unmarked."""
        problems = [
            f"{caller.name} is not a charlm hook{_did_you_mean(caller.name)}; it is never called"
            for caller in self._pm.get_hookcallers(module) or []
            if not caller.has_spec()
        ]
        for attr, obj in vars(module).items():
            if (
                attr.startswith("register_")
                and inspect.isfunction(obj)
                and obj.__module__ == module.__name__
                and self._pm.parse_hookimpl_opts(module, attr) is None
            ):
                unknown = "" if attr in KINDS.values() else f", nor a charlm hook{_did_you_mean(attr)}"
                problems.append(f"{attr} is not marked @charlm.hookimpl{unknown}; it is never called")
        return problems

    def _add(self, comp: Component) -> None:
        existing = self._components[comp.kind].get(comp.name)
        if existing is None:
            self._components[comp.kind][comp.name] = comp
        else:
            self.clashes.append(Clash(comp.kind, comp.name, existing.plugin, comp.plugin))

    def check_clashes(self) -> None:
        """Raise ``PluginError`` naming both plugins of the first name clash, if any."""
        if self.clashes:
            raise PluginError(self.clashes[0].message())

    def names(self, kind: str) -> list[str]:
        return sorted(self._components[kind])

    def get(self, kind: str, name: str) -> Component:
        if kind not in KINDS:
            raise PluginError(f"unknown component kind {kind!r} (kinds: {', '.join(KINDS)})")
        comp = self._components[kind].get(name)
        if comp is None:
            raise PluginError(unknown_component_message(kind, name, self.names(kind)))
        return comp

    def create(self, kind: str, spec, **context):
        """Build a component from a ``ComponentSpec``; ``context`` is what that kind's factories take."""
        from charlm.errors import ConfigError

        comp = self.get(kind, spec.kind)
        try:
            return comp.factory(spec.options, **context)
        except (ValueError, TypeError) as exc:  # options the factory refuses: the key to fix
            raise ConfigError(f"{spec.path or kind}: {exc}") from None


def _lazy_factory(path: str, what: str) -> LazyFactory:
    module, _, attr = path.partition(":")
    try:
        found = bool(attr) and importlib.util.find_spec(module) is not None
    except ImportError:  # a parent package that does not exist
        found = False
    if not found:
        raise TypeError(f'{what}: "{path}" names no importable "module:attr"')
    return LazyFactory(path)


def _did_you_mean(hook_name: str) -> str:
    close = difflib.get_close_matches(hook_name, KINDS.values(), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def unknown_component_message(kind: str, name: str, available: list[str]) -> str:
    msg = f'unknown {kind} "{name}" (available: {", ".join(available) or "none"})'
    provider = KNOWN_PROVIDERS.get((kind, name))
    if provider:
        return f"{msg}; is {provider} installed?"
    close = difflib.get_close_matches(name, available, n=1)
    if close:
        return f'{msg}; did you mean "{close[0]}"?'
    return f"{msg}; is a plugin that provides it installed? (charlm list-plugins)"


def _charlm_entry_points() -> list[importlib.metadata.EntryPoint]:
    seen, result = set(), []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        key = (ep.dist.name if ep.dist else None, ep.name, ep.value)
        if key not in seen:  # the same distribution found twice on sys.path
            seen.add(key)
            result.append(ep)
    # a fixed order, so that conflicts and listings do not depend on sys.path order
    return sorted(result, key=lambda ep: (ep.dist.name if ep.dist else "", ep.name))


_default: Registry | None = None


def get_registry(check_clashes: bool = True) -> Registry:
    """The process-wide registry, honouring ``CHARLM_DISABLE_PLUGINS`` (rebuilt when it changes).

    A name clash raises ``PluginError``; ``check_clashes=False`` is for ``list-plugins``,
    which shows the clash instead.
    """
    global _default
    if _default is None or _default.disabled != disabled_from_env():
        _default = Registry(disabled=disabled_from_env())
    if check_clashes:
        _default.check_clashes()
    return _default
