"""The job config: the schema (attrs classes), TOML/YAML loading, dotted overrides, and the
rules that span several keys.

A component (block, attention, optimizer, ...) is a table with a ``kind`` and that
plugin's own options, structured into the attrs class the plugin registered; a bare
string is the same as a table holding only ``kind``. Structuring is ``charlm.structure``
(a strict cattrs converter). Every error names its dotted key.

This module does not import torch, so that ``charlm config validate`` stays fast.
"""

from __future__ import annotations

import inspect
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import attrs
import tomli_w

from charlm.errors import ConfigError
from charlm.memory_estimate import check_training
from charlm.structure import ComponentSpec, nesting_guard, of_kind, show_key, structure, unstructure
from charlm.validators import in_range, non_negative, positive

MAX_WORKERS = 64  # data loader processes: each is a process of its own; more only slows the start
MAX_NGRAM_BUCKETS = 1 << 24  # rows of one n-gram table: keeps charlm/ngram.py's int64 hash exact

# What each kind's factory is called with besides its options (the table in charlm/interfaces.py).
FACTORY_CONTEXT: dict[str, tuple[str, ...]] = {
    "block": ("model", "layer_index", "positional", "max_len"),
    "attention": ("model", "layer_index", "positional", "max_len"),
    "positional": ("model", "max_len"),
    "mlp": ("model",),
    "norm": ("dim",),
    "sampler": (),
    "scheduler": (),
    "optimizer": ("model",),
    "exporter": (),
    "data_source": (),
}


def component(default: str):
    """A component field whose default is the component named ``default``, with default options."""
    return attrs.field(factory=lambda: ComponentSpec(default))


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
        if not 1 <= rows <= MAX_NGRAM_BUCKETS:
            raise ValueError(f"each table needs 1 to {MAX_NGRAM_BUCKETS} rows, got {rows}")


@attrs.define
class ModelConfig:
    d_model: int = attrs.field(default=128, validator=positive)
    n_layer: int = attrs.field(default=4, validator=positive)
    n_head: int = attrs.field(default=4, validator=positive)
    n_kv_head: int | None = attrs.field(default=None, validator=positive)  # None: n_head (MHA)
    block: Annotated[ComponentSpec, "block"] = component("transformer")
    layers: list[Annotated[ComponentSpec, "block"]] | None = None
    attention: Annotated[ComponentSpec, "attention"] = component("gqa")
    positional: Annotated[ComponentSpec, "positional"] = component("rope")
    mlp: Annotated[ComponentSpec, "mlp"] = component("swiglu")
    norm: Annotated[ComponentSpec, "norm"] = component("rmsnorm")
    tie_embeddings: bool = True
    logit_softcap: float = attrs.field(default=0.0, validator=non_negative)  # 0: off
    init_std: float = attrs.field(default=0.02, validator=positive)
    zero_init_projections: bool = True  # attention/MLP output projections start at zero
    # rows of the hashed 2-gram, 3-gram, ... embeddings added to the byte embedding (charlm/ngram.py)
    ngram_buckets: list[int] = attrs.field(factory=list, validator=_ngram_buckets)
    # each table fills its own d_model / len(ngram_buckets) dimensions (concatenated) instead of all of
    # them (summed): the same bytes hold len(ngram_buckets) times the rows
    ngram_split: bool = False

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    @property
    def ngram_width(self) -> int:
        """Each n-gram table's width: d_model, or its share of d_model when the tables are split."""
        return self.d_model // len(self.ngram_buckets) if self.ngram_split and self.ngram_buckets else self.d_model

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
    num_workers: int = attrs.field(default=0, validator=in_range(0, MAX_WORKERS))
    # "size": train/val are checked against meta.json by size at start; "sha256": also by
    # content (reads both files once: a flipped byte cannot train silently)
    verify: Literal["size", "sha256"] = "size"


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
class DistributedConfig:
    strategy: Literal["ddp", "fsdp", "auto"] = "ddp"  # "auto": DDP (one node, a model that fits); "fsdp": FSDP2
    timeout_s: float = attrs.field(default=600.0, validator=positive)  # a collective waits this long for a lost peer


@attrs.define
class JobConfig:
    out_dir: str = "runs/default"
    seed: int = attrs.field(default=1337, validator=non_negative)  # numpy's SeedSequence takes no negatives
    seq_len: int = attrs.field(default=128, validator=positive)
    micro_batch_size: int = attrs.field(default=16, validator=positive)
    batch_size_tokens: int | None = attrs.field(default=None, validator=positive)  # None: no accumulation
    precision: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"  # "auto": bf16 where it is native, else fp32
    compile: bool | Literal["auto"] = False
    device: str = "auto"
    max_steps: int | None = attrs.field(default=None, validator=positive)
    max_time: str | None = attrs.field(default=None, validator=_duration)
    grad_clip: float = attrs.field(default=1.0, validator=non_negative)  # 0: off
    on_nonfinite: Literal["stop", "skip"] = "stop"
    model: ModelConfig = attrs.Factory(ModelConfig)
    data: DataConfig = attrs.Factory(DataConfig)
    optimizer: Annotated[ComponentSpec, "optimizer"] = component("adamw")
    scheduler: Annotated[ComponentSpec, "scheduler"] = component("cosine")
    checkpoint: CheckpointConfig = attrs.Factory(CheckpointConfig)
    logging: LoggingConfig = attrs.Factory(LoggingConfig)
    distributed: DistributedConfig = attrs.Factory(DistributedConfig)

    @property
    def max_time_s(self) -> float | None:
        return parse_duration(self.max_time) if self.max_time is not None else None

    def grad_accum_steps(self, world_size: int = 1) -> int:
        per_step = self.micro_batch_size * self.seq_len * world_size
        return 1 if self.batch_size_tokens is None else self.batch_size_tokens // per_step


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


def resolve_precision(name: str, device) -> str:
    """``precision = "auto"``: bf16 where ``device`` multiplies bfloat16 natively, else fp32.

    Natively: a CUDA GPU that supports bf16, or a CPU with AMX or AVX512-BF16 (on such a CPU
    bf16 matmuls ran 2-6x faster than fp32 at the micro model's shapes). Elsewhere bf16
    autocast would emulate them, slower than fp32. Other names are returned as they are.
    """
    if name != "auto":
        return name
    import torch

    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu" and (torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()):
        return "bf16"
    return "fp32"


def device_type(name: str) -> str:
    """The type ("cpu", "cuda", "mps") of device ``name``, checked as ``resolve_device`` does.

    The CPU always exists: only another device needs torch to answer, so that
    ``charlm config validate`` of a CPU job imports no torch.
    """
    return "cpu" if name == "cpu" else resolve_device(name).type


def validate_job(job: JobConfig, world_size: int | None = None) -> JobConfig:
    """Rules that span several keys, then every component's own: each error names the key to fix."""
    world_size = world_size_from_env() if world_size is None else world_size
    m = job.model
    if m.d_model % m.n_head:
        raise ConfigError(f"model.n_head: {m.n_head} does not divide d_model={m.d_model}")
    if m.n_head % m.kv_heads:
        raise ConfigError(f"model.n_kv_head: {m.kv_heads} does not divide n_head={m.n_head}")
    if m.ngram_split and m.ngram_buckets and m.d_model % len(m.ngram_buckets):
        raise ConfigError(
            f"model.ngram_split: {len(m.ngram_buckets)} n-gram tables cannot share d_model={m.d_model} equally"
        )
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
    if job.device != "auto":  # a named device must exist ("auto" always finds one)
        device_type(job.device)
    if job.precision == "fp16" and (device := device_type(job.device)) != "cuda":
        raise ConfigError(f"precision: fp16 needs a CUDA device (device is {device}); use bf16 or fp32")
    for _, kind, spec in component_specs(job):
        check_factory(kind, spec)
        check_options(spec, job)
    check_training(job)  # last: the components' own checks name a bad option more precisely
    return job


def check_options(spec: ComponentSpec, job: JobConfig) -> None:
    """The options' ``check(job)`` (cross-key rules, part of every kind's contract)."""
    check = getattr(spec.options, "check", None)
    if check is not None:
        try:
            check(job)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{spec.path}: {exc}") from None


def check_factory(kind: str, spec: ComponentSpec) -> None:
    """The factory can be called as the core will call it (nothing is built)."""
    from charlm.registry import get_registry

    factory = get_registry().get(kind, spec.kind).factory
    context = FACTORY_CONTEXT[kind]
    try:
        inspect.signature(factory).bind(spec.options, **dict.fromkeys(context))
    except TypeError as exc:
        call = ", ".join(["options", *(f"{name}=..." for name in context)])
        name = getattr(factory, "__qualname__", repr(factory))
        raise ConfigError(f"{spec.path}: factory {name} cannot be called with ({call}): {exc}") from None
    except ValueError:  # no signature to inspect (some builtins): the call will tell
        pass


def component_specs(job: JobConfig):
    """``(dotted path, kind, spec)`` of every component of the job."""
    m = job.model
    yield "model.block", "block", m.block
    for i, spec in enumerate(m.layers or []):
        yield f"model.layers[{i}]", "block", spec
    for kind in ("attention", "positional", "mlp", "norm"):
        yield f"model.{kind}", kind, getattr(m, kind)
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
            raise ConfigError(f"{path}: YAML configs need PyYAML (pip install 'charlm-toolkit[yaml]')") from None
        try:
            with nesting_guard(str(path)):
                data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {exc}".replace("\n", " ")) from None
        data = {} if data is None else data
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        return data
    try:
        with nesting_guard(str(path)):
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
        with nesting_guard(f"override {show_key(key.strip())}"):
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
                raise ConfigError(f"override {text!r}: {show_key('.'.join(keys[: i + 1]))} is not a table")
            node = child
        node[keys[-1]] = value
    return raw


def resolve_component(value: Any, kind: str, path: str) -> ComponentSpec:
    """A component's name or table (``{"kind": ..., **options}``) -> its ``ComponentSpec``."""
    return structure(value, of_kind(kind), path)


structure_attrs = structure  # plain data -> an attrs class, e.g. (raw, ModelConfig, "model")


def config_from_dict(raw: dict, world_size: int | None = None, validate: bool = True) -> JobConfig:
    job = structure(raw, JobConfig)
    return validate_job(job, world_size) if validate else job


def load_config(path: str | Path, overrides: list[str] = (), world_size: int | None = None) -> JobConfig:
    raw = apply_overrides(read_config_file(path), list(overrides))
    return config_from_dict(raw, world_size)


# ---------------------------------------------------------------- writing


def to_dict(job: JobConfig) -> dict:
    """Plain data (no None), loadable back by ``config_from_dict``; what checkpoints store."""
    return unstructure(job)


def config_to_toml(job: JobConfig) -> str:
    return tomli_w.dumps(to_dict(job))
