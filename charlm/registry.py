"""The plugin manager: built-in modules and entry points -> (kind, name) -> component.

The registry is the only way the core finds a component. Built-in plugins are listed in
``BUILTIN_MODULES`` and registered through the same hooks as third-party ones, which come
from the ``charlm`` entry-point group. We walk the entry points ourselves: pluggy's loader
drops a second entry point of the same name and stops at the first plugin that fails.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import os
import warnings
from typing import Any, Callable

import attrs
import pluggy

from charlm import __version__, hookspecs
from charlm.errors import PluginError

ENTRY_POINT_GROUP = "charlm"
DISABLE_ENV = "CHARLM_DISABLE_PLUGINS"

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
    """A plugin failed to load; the others were loaded."""


@attrs.frozen
class Component:
    kind: str
    name: str
    factory: Callable[..., Any]
    config: type | None
    help: str
    plugin: str


@attrs.define
class PluginInfo:
    name: str
    module: str
    distribution: str
    version: str
    status: str = "ok"  # ok | failed | disabled
    error: str | None = None
    components: dict[str, list[Component]] = attrs.Factory(dict)

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "module": self.module,
            "status": self.status,
            "error": self.error,
            "components": {
                kind: [{"name": c.name, "help": c.help} for c in comps]
                for kind, comps in self.components.items()
            },
        }


def disabled_from_env() -> set[str]:
    return {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}


class Registry:
    """Every installed component, by kind and name."""

    def __init__(self, disabled: set[str] | frozenset[str] = frozenset(), entry_points: bool = True):
        self.disabled = set(disabled)
        self.plugins: list[PluginInfo] = []
        self._components: dict[str, dict[str, Component]] = {kind: {} for kind in KINDS}
        self._pm = pluggy.PluginManager("charlm")
        self._pm.add_hookspecs(hookspecs)
        for name, module in BUILTIN_MODULES.items():
            self._load(name, module, "charlm", __version__)
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
        try:
            module = importlib.import_module(module_name)
            self._pm.register(module, name=f"{dist}:{name}")
            found = self._collect(module, info)
        except PluginError:
            raise
        except Exception as exc:  # a broken plugin must not take the others down
            info.status, info.error = "failed", f"{type(exc).__name__}: {exc}"
            warnings.warn(
                f"plugin {name!r} ({dist} {version}, {module_name}) failed to load: {info.error}",
                PluginLoadWarning,
                stacklevel=2,
            )
            return
        for comp in found:
            self._add(comp)
            info.components.setdefault(comp.kind, []).append(comp)

    def _collect(self, module, info: PluginInfo) -> list[Component]:
        """Call each hook of one plugin and return what it registered (nothing is added yet)."""
        found: list[Component] = []
        for kind, hook_name in KINDS.items():
            impl = getattr(module, hook_name, None)
            if impl is None or not hasattr(impl, "charlm_impl"):
                continue

            def register(name, factory, config=None, help="", _kind=kind):
                if not isinstance(name, str) or not name:
                    raise TypeError(f"{hook_name}: a component name must be a non-empty string, got {name!r}")
                if config is not None and not attrs.has(config):
                    raise TypeError(f"{hook_name}: config for {name!r} must be an attrs class")
                found.append(Component(_kind, name, factory, config, help, info.name))

            impl(register=register)
        return found

    def _add(self, comp: Component) -> None:
        existing = self._components[comp.kind].get(comp.name)
        if existing is not None:
            raise PluginError(
                f"{comp.kind} {comp.name!r} is registered by two plugins: {existing.plugin!r} and "
                f"{comp.plugin!r}; disable one with {DISABLE_ENV}={comp.plugin}"
            )
        self._components[comp.kind][comp.name] = comp

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
        comp = self.get(kind, spec.kind)
        return comp.factory(spec.options, **context)


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


def get_registry() -> Registry:
    """The process-wide registry, honouring ``CHARLM_DISABLE_PLUGINS``."""
    global _default
    if _default is None or _default.disabled != disabled_from_env():
        _default = Registry(disabled=disabled_from_env())
    return _default
