"""Contract checks for blocks and models, for plugin authors' own test suites (the core runs them too).

A plugin that registers a block checks it in one line::

    from charlm.testing import check_block

    def test_ssm_block_contract():
        check_block("ssm")                                   # default options
        check_block({"kind": "ssm", "d_state": 8}, {"d_model": 48, "n_head": 4}, bf16=True)

``check_block`` builds a small ``ByteLM`` of that block and runs ``check_model``, which
asserts, in float32 on the CPU:

- each component's options pass their own ``check(job)`` (and it does not crash);
- no module is stored in two places (a block that keeps the model's shared positional
  encoding as a submodule shares its tensors: keep a bound method such as ``positional.rotate``);
- full forward == byte-by-byte decode == prefill and decode in random chunks (also from a
  non-zero start position);
- a model whose blocks all have ``max_context = None`` runs past the trained context: a
  prompt longer than ``max_len`` and decoding beyond it agree with the full forward;
- causality: changing byte t never changes the logits before t;
- batch rows are independent;
- a block with ``max_context = None`` keeps a state whose size does not depend on the
  sequence length (nor on ``init_state``'s ``max_len``);
- every parameter gets a finite gradient, and ``no_weight_decay()`` names real parameters;
- the state dict survives ``torch.save`` / ``torch.load(weights_only=True)`` and a safetensors
  save / load (what the exporters write) into a new model;
- with ``bf16=True``, the training forward under bfloat16 autocast (``precision = "bf16"``)
  runs, stays near the float32 logits and gives finite gradients.

Parameters that start at zero (zero-initialised projections or heads) are given small random
values first, so that the checks compare real numbers, not zeros. A failed check raises
``AssertionError`` saying which property broke, by how much, and what to fix.

The other kinds have their checks in ``charlm.component_checks`` (re-exported here):
``check_sampler``, ``check_exporter``, ``check_data_source``.
"""

from __future__ import annotations

import io
import random

import attrs
import safetensors.torch
import torch

from charlm.component_checks import check_data_source, check_exporter, check_sampler
from charlm.config import ComponentSpec, JobConfig, ModelConfig, component_specs, config_from_dict, resolve_component
from charlm.model import ByteLM

__all__ = [
    "SMALL_MODEL",
    "build_random",
    "check_block",
    "check_data_source",
    "check_exporter",
    "check_model",
    "check_sampler",
    "small_job",
    "small_model_config",
]

SMALL_MODEL = {"d_model": 32, "n_layer": 2, "n_head": 4, "n_kv_head": 2}
BF16_ATOL = 0.25  # bf16 keeps 8 bits of mantissa: logits of the small model move by a few 1e-2


def small_job(overrides: dict | None = None, seq_len: int = 32) -> JobConfig:
    """A ``JobConfig`` of the small model (``SMALL_MODEL`` updated with ``overrides``) on the CPU."""
    raw = {
        "model": {**SMALL_MODEL, **(overrides or {})},
        "seq_len": seq_len,
        "device": "cpu",
        "max_steps": 1,
        "data": {"train": "train.bin"},
    }
    return config_from_dict(raw, validate=False)


def small_model_config(overrides: dict | None = None) -> ModelConfig:
    """A resolved ``ModelConfig``: ``SMALL_MODEL`` updated with ``overrides`` (config keys)."""
    return small_job(overrides).model


def check_block(
    block: str | dict | ComponentSpec,
    model_cfg: dict | None = None,
    *,
    max_len: int = 32,
    batch: int = 3,
    atol: float = 1e-4,
    seed: int = 0,
    bf16: bool = False,
) -> ByteLM:
    """Check the block ``block`` (a name, a ``{"kind": ..., **options}`` table or a spec).

    ``model_cfg`` holds ``ModelConfig`` keys that override the small default shape
    (``SMALL_MODEL``). Returns the model that passed.
    """
    cfg = small_model_config({**(model_cfg or {}), "layers": None})
    cfg = attrs.evolve(cfg, block=resolve_component(block, "block", "model.block"))
    return check_model(cfg, max_len, batch=batch, atol=atol, seed=seed, bf16=bf16)


def check_model(
    cfg: ModelConfig, max_len: int = 32, *, batch: int = 3, atol: float = 1e-4, seed: int = 0, bf16: bool = False
) -> ByteLM:
    """Check a ``ByteLM`` built from ``cfg`` (with ``block`` or a hybrid ``layers`` list).

    Sequences are ``max_len`` bytes long; ``atol`` bounds the max abs logit difference
    between paths that must agree. ``bf16`` adds the bfloat16 autocast pass. Returns the
    model that passed.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: handing them between threads costs more than it saves
    try:
        return _check_model(cfg, max_len, batch, atol, seed, bf16)
    finally:
        torch.set_num_threads(threads)


def _check_model(cfg: ModelConfig, max_len: int, batch: int, atol: float, seed: int, bf16: bool) -> ByteLM:
    _check_options(attrs.evolve(small_job(seq_len=max_len), model=cfg))
    torch.manual_seed(seed)
    model = build_random(cfg, max_len)
    _check_no_shared_modules(model)
    generator = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, 256, (batch, max_len), generator=generator)
    rng = random.Random(seed)

    with torch.no_grad():
        full, states = model(idx)
        assert states is None, f"without states the model must return None as states, got {type(states).__name__}"
        assert full.shape == (batch, max_len, 256), f"logits shape {tuple(full.shape)} != {(batch, max_len, 256)}"
        assert torch.isfinite(full).all(), "full forward gave non-finite logits"

        stepped = _run_chunks(model, idx, 0, [1] * max_len)
        _assert_close(stepped, full, atol, "byte-by-byte decode differs from the full forward")

        chunks = _random_chunks(max_len, rng)
        chunked = _run_chunks(model, idx, 0, chunks)
        _assert_close(chunked, full, atol, f"prefill + decode in chunks {chunks} differs from the full forward")

        start = max_len // 4  # a window that does not start at position 0
        length = max_len - start
        shifted, _ = model(idx[:, :length], pos=start)
        chunks = _random_chunks(length, rng)
        chunked = _run_chunks(model, idx[:, :length], start, chunks)
        _assert_close(chunked, shifted, atol, f"from position {start}, chunks {chunks} differ from the full forward")

        if model.max_context is None:
            _check_past_max_len(model, max_len, atol, generator)
        _check_causal(model, idx, full, atol)
        _check_rows_independent(model, idx, full, atol)
        _check_state_size(model, idx, max_len)

    _check_gradients(model, idx)
    _check_no_weight_decay(model)
    _check_state_dict_round_trips(model, cfg, max_len, idx, full, atol)
    if bf16:
        _check_bf16(model, idx, full)
    return model


def build_random(cfg: ModelConfig, max_len: int) -> ByteLM:
    """A float32 ``ByteLM`` in eval mode whose zero-initialised parameters got small random values."""
    model = ByteLM(cfg, max_len).float().eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.numel() and not p.any():
                p.normal_(std=0.05)
    return model


def _check_options(job: JobConfig) -> None:
    for path, _, spec in component_specs(job):
        check = getattr(spec.options, "check", None)
        if check is None:
            continue
        name = f"{type(spec.options).__name__}.check(job)"
        try:
            check(job)
        except ValueError as exc:
            raise AssertionError(f"{path}: {name} rejects the model under test: {exc}") from None
        except Exception as exc:
            raise AssertionError(
                f"{path}: {name} crashed with {type(exc).__name__}: {exc}; check(job) receives the whole"
                " JobConfig (job.model, job.seq_len, ...) and raises ValueError to reject it"
            ) from exc


def _check_no_shared_modules(model: ByteLM) -> None:
    """A module with tensors stored under two names shares them: safetensors refuses such a state dict."""
    first_name: dict[int, str] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        if next(module.parameters(), None) is None and next(module.buffers(), None) is None:
            continue
        if id(module) in first_name:
            raise AssertionError(
                f"{name} is the same module as {first_name[id(module)]}: a module stored in two places shares its"
                " tensors (safetensors export fails); keep what the block needs of it as a bound method (as"
                " gqa keeps positional.rotate), not as a submodule"
            )
        first_name[id(module)] = name


def _run_chunks(model: ByteLM, idx: torch.Tensor, start: int, chunks: list[int]) -> torch.Tensor:
    states = model.init_states(idx.shape[0], idx.shape[1], idx.device, torch.float32)
    expected = len(states)
    logits, offset = [], 0
    for size in chunks:
        out, states = model(idx[:, offset : offset + size], pos=start + offset, states=states)
        assert states is not None and len(states) == expected, (
            f"with states the model must return as many states as init_states ({expected}), got {states!r}"
        )
        logits.append(out)
        offset += size
    return torch.cat(logits, dim=1)


def _random_chunks(total: int, rng: random.Random) -> list[int]:
    """A prompt of a random length, then a mix of single bytes and short pieces."""
    chunks = [rng.randint(2, max(2, total // 2))]
    while sum(chunks) < total:
        chunks.append(min(rng.choice([1, 1, 2, 3, 5]), total - sum(chunks)))
    return chunks


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float, what: str) -> None:
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    diff = (actual - expected).abs()
    worst = diff.max().item()
    if not worst <= atol:  # also catches NaN
        position = int(diff.amax(dim=(0, 2)).argmax())
        raise AssertionError(f"{what}: max abs logit difference {worst:.3g} > {atol:g} (first worst at byte {position})")


def _check_past_max_len(model: ByteLM, max_len: int, atol: float, generator: torch.Generator) -> None:
    """Generation never re-windows a model without a max_context: it must run at any position."""
    total, prompt = 2 * max_len + 5, max_len + 3
    idx = torch.randint(0, 256, (1, total), generator=generator)
    advice = (
        f"a model whose blocks have max_context None must run past the trained context (max_len={max_len}):"
        " size no table by max_len, or compute positions past it on demand"
    )
    try:
        full, _ = model(idx)
        decoded = _run_chunks(model, idx, 0, [prompt] + [1] * (total - prompt))
    except Exception as exc:
        raise AssertionError(f"{total} bytes failed with {type(exc).__name__}: {exc}; {advice}") from exc
    _assert_close(decoded, full, atol, f"a {prompt}-byte prefill and decode to {total} bytes differ from the full forward ({advice})")


def _check_causal(model: ByteLM, idx: torch.Tensor, full: torch.Tensor, atol: float) -> None:
    length = idx.shape[1]
    for t in sorted({length // 3, length - 1}):
        changed = idx.clone()
        changed[:, t] = (changed[:, t] + 1 + torch.arange(len(idx))) % 256
        logits, _ = model(changed)
        _assert_close(logits[:, :t], full[:, :t], atol, f"not causal: changing byte {t} changed earlier logits")


def _check_rows_independent(model: ByteLM, idx: torch.Tensor, full: torch.Tensor, atol: float) -> None:
    for row in range(len(idx)):
        alone, _ = model(idx[row : row + 1])
        _assert_close(alone, full[row : row + 1], atol, f"batch row {row} alone differs from the same row in a batch")


def _check_state_size(model: ByteLM, idx: torch.Tensor, max_len: int) -> None:
    batch = idx.shape[0]
    small = model.init_states(batch, max_len // 2, idx.device, torch.float32)
    large = model.init_states(batch, 4 * max_len, idx.device, torch.float32)
    _, after = model(idx[:, : max_len // 2], pos=0, states=model.init_states(batch, max_len, idx.device, torch.float32))
    for i, block in enumerate(model.blocks):
        if block.max_context is not None:
            assert isinstance(block.max_context, int) and block.max_context > 0, (
                f"layer {i}: max_context must be a positive int or None, got {block.max_context!r}"
            )
            continue
        sizes = {
            f"init_state(max_len={max_len // 2})": _state_bytes(small[i]),
            f"init_state(max_len={4 * max_len})": _state_bytes(large[i]),
            f"after {max_len // 2} bytes": _state_bytes(after[i]),
        }
        assert len(set(sizes.values())) == 1, (
            f"layer {i} ({type(block).__name__}) has max_context None but its state size changes: {sizes}"
        )


def _state_bytes(state) -> int:
    """Bytes held in the tensors of a state, wherever they sit (tuples, lists, dicts, objects)."""
    seen, stack, total = set(), [state], 0
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, torch.Tensor):
            total += item.numel() * item.element_size()
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif hasattr(item, "__dict__"):
            stack.extend(vars(item).values())
    return total


def _check_gradients(model: ByteLM, idx: torch.Tensor, what: str = "") -> None:
    model.zero_grad(set_to_none=True)
    logits, _ = model(idx[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 256), idx[:, 1:].reshape(-1))
    loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"parameter {name} gets no gradient{what} (unused in forward?)"
            assert torch.isfinite(p.grad).all(), f"parameter {name} has a non-finite gradient{what}"
    model.zero_grad(set_to_none=True)


def _check_no_weight_decay(model: ByteLM) -> None:
    names = dict(model.named_parameters())
    unknown = sorted(model.no_weight_decay() - set(names))
    assert not unknown, f"no_weight_decay() names parameters that do not exist: {unknown}"


def _check_state_dict_round_trips(model, cfg, max_len, idx, full, atol) -> None:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    _check_restored(torch.load(buffer, weights_only=True), "torch.save / torch.load", cfg, max_len, idx, full, atol)
    state_dict = model.state_dict()
    owners: dict[int, list[str]] = {}
    for name, tensor in state_dict.items():
        if tensor.numel():  # empty tensors own no memory
            owners.setdefault(tensor.untyped_storage().data_ptr(), []).append(name)
    shared = [names for names in owners.values() if len(names) > 1]
    assert not shared, (
        f"state dict entries share memory: {shared}; safetensors refuses them (the int8 and safetensors exporters"
        " fail): give every tensor one owner (tie weights by using one tensor in forward, not by storing it twice)"
    )
    try:
        data = safetensors.torch.save(state_dict)
    except (RuntimeError, ValueError) as exc:  # e.g. a non-contiguous tensor
        raise AssertionError(f"the state dict cannot be saved as safetensors: {str(exc).strip().splitlines()[0]}") from None
    _check_restored(safetensors.torch.load(data), "safetensors", cfg, max_len, idx, full, atol)


def _check_restored(state_dict, how: str, cfg, max_len, idx, full, atol) -> None:
    torch.manual_seed(12345)  # a differently initialised model, overwritten by the load
    restored = ByteLM(cfg, max_len).float().eval()
    restored.load_state_dict(state_dict)
    with torch.no_grad():
        logits, _ = restored(idx)
    _assert_close(logits, full, atol, f"the model restored from its state dict ({how}) gives different logits")


def _check_bf16(model: ByteLM, idx: torch.Tensor, full: torch.Tensor) -> None:
    """Training with precision = "bf16" runs the forward under bfloat16 autocast."""
    what = " under bf16 autocast"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        try:
            with torch.no_grad():
                logits, _ = model(idx)
        except RuntimeError as exc:
            raise AssertionError(
                f"the forward fails{what} (precision = \"bf16\"): {exc}; matmul outputs are bfloat16 there:"
                " cast to one dtype (x.dtype) before ops that need matching dtypes"
            ) from exc
        _assert_close(logits.float(), full, BF16_ATOL, f"the forward{what} drifts from float32")
        _check_gradients(model, idx, what)
