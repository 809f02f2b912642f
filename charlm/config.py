"""The job config: attrs classes, TOML/YAML loading, dotted overrides, strict validation.

A component (block, attention, optimizer, ...) is a table with a ``kind`` and that
plugin's own options, structured into the attrs class the plugin registered; a bare
string is the same as a table holding only ``kind``. Every error names its dotted key.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import attrs
import cattrs

from charlm.errors import ConfigError, PluginError
from charlm.ngram import MAX_BUCKETS
from charlm.tomlwrite import dumps_toml
from charlm.validators import non_negative, positive

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@attrs.define
class ComponentSpec:
    """A component by name, with its plugin's structured options (``None`` before resolution)."""

    kind: str
    options: Any = None


def component(kind: str, default: str):
    return attrs.field(factory=lambda: ComponentSpec(default), metadata={"component": kind})


_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*$")


def parse_duration(text: str) -> float:
    """Seconds in "90", "90s", "5m", "1h30m", "2.5m"."""
    match = _DURATION.match(text)
    if not text.strip() or not match or not any(match.groups()):
        raise ValueError(f'cannot read {text!r} as a duration (examples: "300s", "5m", "1h30m")')
    h, m, s = (float(g) if g else 0.0 for g in match.groups())
    seconds = h * 3600 + m * 60 + s
    if seconds <= 0:
        raise ValueError(f"a duration must be > 0, got {text!r}")
    return seconds


def _duration(instance, attribute, value):
    if value is not None:
        parse_duration(value)


def _ngram_buckets(instance, attribute, value):
    for rows in value:
        if not 1 <= rows <= MAX_BUCKETS:
            raise ValueError(f"each table needs 1 to {MAX_BUCKETS} rows, got {rows}")


@attrs.define
class ModelConfig:
    d_model: int = attrs.field(default=128, validator=positive)
    n_layer: int = attrs.field(default=4, validator=positive)
    n_head: int = attrs.field(default=4, validator=positive)
    n_kv_head: int | None = attrs.field(default=None, validator=positive)  # None: n_head (MHA)
    block: ComponentSpec = component("block", "transformer")
    layers: list[ComponentSpec] | None = attrs.field(default=None, metadata={"component": "block"})
    attention: ComponentSpec = component("attention", "gqa")
    positional: ComponentSpec = component("positional", "rope")
    mlp: ComponentSpec = component("mlp", "swiglu")
    norm: ComponentSpec = component("norm", "rmsnorm")
    tie_embeddings: bool = True
    logit_softcap: float = attrs.field(default=0.0, validator=non_negative)  # 0: off
    init_std: float = attrs.field(default=0.02, validator=positive)
    zero_init_projections: bool = True  # attention/MLP output projections start at zero
    # rows of the hashed 2-gram, 3-gram, ... embeddings added to the byte embedding (charlm/ngram.py)
    ngram_buckets: list[int] = attrs.field(factory=list, validator=_ngram_buckets)

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    def layer_specs(self) -> list[ComponentSpec]:
        """The block of every layer: ``layers`` when given, else ``block`` repeated."""
        return list(self.layers) if self.layers is not None else [self.block] * self.n_layer


@attrs.define
class DataConfig:
    train: str | None = None
    val: str | None = None
    num_workers: int = attrs.field(default=0, validator=non_negative)


@attrs.define
class CheckpointConfig:
    every: int = attrs.field(default=0, validator=non_negative)  # 0: only at the end
    keep_last: int = attrs.field(default=3, validator=positive)


@attrs.define
class LoggingConfig:
    log_every: int = attrs.field(default=10, validator=positive)
    eval_every: int = attrs.field(default=0, validator=non_negative)  # 0: only the final eval
    eval_bytes: int = attrs.field(default=262144, validator=positive)
    final_eval: bool = True
    wandb_project: str | None = None
    tensorboard: bool = False


@attrs.define
class JobConfig:
    out_dir: str = "runs/default"
    seed: int = 1337
    seq_len: int = attrs.field(default=128, validator=positive)
    micro_batch_size: int = attrs.field(default=16, validator=positive)
    batch_size_tokens: int | None = attrs.field(default=None, validator=positive)  # None: no accumulation
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    compile: Union[bool, Literal["auto"]] = False
    device: str = "auto"
    max_steps: int | None = attrs.field(default=None, validator=positive)
    max_time: str | None = attrs.field(default=None, validator=_duration)
    grad_clip: float = attrs.field(default=1.0, validator=non_negative)  # 0: off
    on_nonfinite: Literal["stop", "skip"] = "stop"
    model: ModelConfig = attrs.Factory(ModelConfig)
    data: DataConfig = attrs.Factory(DataConfig)
    optimizer: ComponentSpec = component("optimizer", "adamw")
    scheduler: ComponentSpec = component("scheduler", "cosine")
    checkpoint: CheckpointConfig = attrs.Factory(CheckpointConfig)
    logging: LoggingConfig = attrs.Factory(LoggingConfig)

    @property
    def max_time_s(self) -> float | None:
        return parse_duration(self.max_time) if self.max_time is not None else None

    def grad_accum_steps(self, world_size: int = 1) -> int:
        per_step = self.micro_batch_size * self.seq_len * world_size
        return 1 if self.batch_size_tokens is None else self.batch_size_tokens // per_step


# ---------------------------------------------------------------- structuring

_leaf_converter = cattrs.Converter()


def _type_name(tp) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def structure(value: Any, tp: Any, path: str, registry=None, component_kind: str | None = None) -> Any:
    """Structure plain data into ``tp`` strictly: no coercion ("false" is no bool, 2.9 no int)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is ComponentSpec:
        return resolve_component(value, component_kind, path, registry)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return structure(value, arg, path, registry, component_kind)
            except ConfigError as exc:
                errors.append(exc)
        if len(errors) == 1:
            raise errors[0]
        raise ConfigError(f"{path}: {value!r} is not valid here (expected {_describe(tp)})")
    if origin is Literal:
        if value not in args or type(value) not in {type(a) for a in args}:
            raise ConfigError(f"{path}: expected one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{path}: expected {len(args)} items, got {len(value)}")
            items = [structure(v, a, f"{path}[{i}]", registry, component_kind) for i, (v, a) in enumerate(zip(value, args))]
        else:
            item_tp = args[0] if args else Any
            items = [structure(v, item_tp, f"{path}[{i}]", registry, component_kind) for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a table, got {value!r}")
        val_tp = args[1] if args else Any
        return {k: structure(v, val_tp, f"{path}.{k}", registry) for k, v in value.items()}
    if attrs.has(tp):
        return structure_attrs(value, tp, path, registry)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    try:
        return _leaf_converter.structure(value, tp)
    except Exception as exc:
        raise ConfigError(f"{path}: expected {_describe(tp)}, got {value!r} ({exc})") from None


def _describe(tp) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args if a is not type(None))
    if origin is Literal:
        return " or ".join(map(repr, args))
    return _type_name(tp) if tp in (int, float, bool, str) else getattr(tp, "__name__", str(tp))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def structure_attrs(value: Any, cls: type, path: str, registry=None) -> Any:
    if not isinstance(value, dict):
        raise ConfigError(f"{path or 'config'}: expected a table, got {value!r}")
    fields = {f.name: f for f in attrs.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in value:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f' (did you mean "{close[0]}"?)' if close else f" (known: {', '.join(fields)})"
            raise ConfigError(f"{_join(path, str(key))}: unknown key{hint}")
    kwargs = {}
    for name, field in fields.items():
        fpath = _join(path, name)
        kind = field.metadata.get("component")
        default = field.default.factory() if isinstance(field.default, attrs.Factory) else field.default
        if name in value:
            raw = value[name]
            if isinstance(default, ComponentSpec) and isinstance(raw, dict) and "kind" not in raw:
                raw = {"kind": default.kind, **raw}  # options for the default component
            item = structure(raw, hints[name], fpath, registry, kind)
        elif default is attrs.NOTHING:
            raise ConfigError(f"{fpath}: missing (required)")
        elif kind is not None:  # a default component still gets its plugin's default options
            item = None if default is None else structure(_unstructure(default), hints[name], fpath, registry, kind)
        else:
            continue
        if field.validator is not None:
            try:
                field.validator(None, field, item)
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"{fpath}: {exc}") from None
        kwargs[name] = item
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path or 'config'}: {exc}") from None


def resolve_component(value: Any, kind: str | None, path: str, registry=None) -> ComponentSpec:
    """A string or a table with ``kind`` -> ComponentSpec with the plugin's structured options."""
    if kind is None:
        raise TypeError(f"{path}: ComponentSpec field without a component kind")
    if isinstance(value, ComponentSpec):
        value = _unstructure(value)
    if isinstance(value, str):
        value = {"kind": value}
    if not isinstance(value, dict) or "kind" not in value:
        raise ConfigError(f'{path}: expected the name of a {kind} or a table with "kind", got {value!r}')
    if not isinstance(value["kind"], str):
        raise ConfigError(f"{path}.kind: expected a string, got {value['kind']!r}")
    if registry is None:
        from charlm.registry import get_registry

        registry = get_registry()
    try:
        comp = registry.get(kind, value["kind"])
    except PluginError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    options = {k: v for k, v in value.items() if k != "kind"}
    if comp.config is None:
        if options:
            raise ConfigError(f"{path}: {kind} {comp.name!r} takes no options, got {', '.join(options)}")
        return ComponentSpec(comp.name, None)
    return ComponentSpec(comp.name, structure_attrs(options, comp.config, path, registry))


# ---------------------------------------------------------------- validation


def world_size_from_env() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def resolve_device(name: str):
    """"auto" -> cuda, then mps, then cpu. A device that is not there is a config error."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f'device: unknown device {name!r} (use "auto", "cpu", "cuda", "cuda:N" or "mps")') from None
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available.get(device.type, False):
        raise ConfigError(f"device: {name!r} is not available on this machine")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device: {name!r} does not exist ({torch.cuda.device_count()} CUDA devices)")
    return device


def validate_job(job: JobConfig, world_size: int | None = None) -> JobConfig:
    """Rules that span several keys; each error names the key to fix."""
    world_size = world_size_from_env() if world_size is None else world_size
    m = job.model
    if m.d_model % m.n_head:
        raise ConfigError(f"model.n_head: {m.n_head} does not divide d_model={m.d_model}")
    if m.n_head % m.kv_heads:
        raise ConfigError(f"model.n_kv_head: {m.kv_heads} does not divide n_head={m.n_head}")
    if m.layers is not None and len(m.layers) != m.n_layer:
        raise ConfigError(f"model.layers: {len(m.layers)} layers listed but n_layer={m.n_layer}")
    per_step = job.micro_batch_size * job.seq_len * world_size
    if job.batch_size_tokens is not None and job.batch_size_tokens % per_step:
        raise ConfigError(
            f"batch_size_tokens: {job.batch_size_tokens} is not a multiple of micro_batch_size * seq_len"
            f" * world_size = {job.micro_batch_size} * {job.seq_len} * {world_size} = {per_step}"
        )
    if job.max_steps is None and job.max_time is None:
        raise ConfigError("max_steps: set max_steps or max_time (or both) so the run ends")
    device = resolve_device(job.device)
    if job.precision == "fp16" and device.type != "cuda":
        raise ConfigError(f"precision: fp16 needs a CUDA device (device is {device.type}); use bf16 or fp32")
    for path, _, spec in component_specs(job):
        check = getattr(spec.options, "check", None)
        if check is not None:
            try:
                check(job)
            except ValueError as exc:
                raise ConfigError(f"{path}: {exc}") from None
    return job


def component_specs(job: JobConfig):
    """``(dotted path, kind, spec)`` of every component the job uses."""
    m = job.model
    yield "model.block", "block", m.block
    for i, spec in enumerate(m.layers or []):
        yield f"model.layers[{i}]", "block", spec
    for name in ("attention", "positional", "mlp", "norm"):
        yield f"model.{name}", name, getattr(m, name)
    yield "optimizer", "optimizer", job.optimizer
    yield "scheduler", "scheduler", job.scheduler


# ---------------------------------------------------------------- loading


def read_config_file(path: str | Path) -> dict:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from None
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ConfigError(f"{path}: YAML configs need PyYAML (pip install 'charlm[yaml]')") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {exc}".replace("\n", " ")) from None
        data = {} if data is None else data
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        return data
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``model.n_layer=4`` -> (["model", "n_layer"], 4); the value is a TOML literal, else a string."""
    key, sep, raw = text.partition("=")
    keys = key.strip().split(".")
    if not sep or not all(k.strip() for k in keys):
        raise ConfigError(f"override {text!r}: expected dotted.key=value, e.g. model.n_layer=4")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return [k.strip() for k in keys], value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    for text in overrides:
        keys, value = parse_override(text)
        node = raw
        for i, k in enumerate(keys[:-1]):
            child = node.get(k)
            if isinstance(child, str):  # a component given by name gains options
                child = node[k] = {"kind": child}
            elif child is None:
                child = node[k] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {'.'.join(keys[: i + 1])} is not a table")
            node = child
        node[keys[-1]] = value
    return raw


def config_from_dict(raw: dict, registry=None, world_size: int | None = None, validate: bool = True) -> JobConfig:
    job = structure_attrs(raw, JobConfig, "", registry)
    return validate_job(job, world_size) if validate else job


def load_config(path: str | Path, overrides: list[str] = (), registry=None, world_size: int | None = None) -> JobConfig:
    raw = apply_overrides(read_config_file(path), list(overrides))
    return config_from_dict(raw, registry, world_size)


# ---------------------------------------------------------------- writing


def _unstructure(obj: Any) -> Any:
    if isinstance(obj, ComponentSpec):
        options = _unstructure(obj.options) if obj.options is not None else {}
        return {"kind": obj.kind, **options}
    if attrs.has(type(obj)):
        out = {}
        for f in attrs.fields(type(obj)):
            value = getattr(obj, f.name)
            if value is not None:
                out[f.name] = _unstructure(value)
        return out
    if isinstance(obj, (list, tuple)):
        return [_unstructure(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _unstructure(v) for k, v in obj.items() if v is not None}
    return obj


def to_dict(job: JobConfig) -> dict:
    """Plain data (no None), loadable back by ``config_from_dict``; what checkpoints store."""
    return _unstructure(job)


def config_to_toml(job: JobConfig) -> str:
    return dumps_toml(to_dict(job))
