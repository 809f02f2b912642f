"""Contract checks for blocks, for plugin authors' own test suites (the core runs them too).

A plugin that registers a block checks it in one line::

    from charlm.testing import check_block

    def test_ssm_block_contract():
        check_block("ssm")                                   # default options
        check_block({"kind": "ssm", "d_state": 8}, {"d_model": 48, "n_head": 4})

``check_block`` builds a small ``ByteLM`` of that block and runs ``check_model``, which
asserts, in float32 on the CPU:

- full forward == byte-by-byte decode == prefill and decode in random chunks (also from a
  non-zero start position);
- causality: changing byte t never changes the logits before t;
- batch rows are independent;
- a block with ``max_context = None`` keeps a state whose size does not depend on the
  sequence length (nor on ``init_state``'s ``max_len``);
- every parameter gets a finite gradient, and ``no_weight_decay()`` names real parameters;
- the state dict survives ``torch.save`` / ``torch.load(weights_only=True)`` into a new model.

Parameters that start at zero (zero-initialised projections or heads) are given small random
values first, so that the checks compare real numbers, not zeros. A failed check raises
``AssertionError`` saying which property broke and by how much.
"""

from __future__ import annotations

import io
import random

import attrs
import torch

from charlm.config import ComponentSpec, ModelConfig, resolve_component, structure_attrs
from charlm.model import ByteLM

SMALL_MODEL = {"d_model": 32, "n_layer": 2, "n_head": 4, "n_kv_head": 2}


def small_model_config(overrides: dict | None = None, registry=None) -> ModelConfig:
    """A resolved ``ModelConfig``: ``SMALL_MODEL`` updated with ``overrides`` (config keys)."""
    raw = {**SMALL_MODEL, **(overrides or {})}
    return structure_attrs(raw, ModelConfig, "model")


def check_block(
    block: str | dict | ComponentSpec,
    model_cfg: dict | None = None,
    *,
    registry=None,
    max_len: int = 32,
    batch: int = 3,
    atol: float = 1e-4,
    seed: int = 0,
) -> ByteLM:
    """Check the block ``block`` (a name, a ``{"kind": ..., **options}`` table or a spec).

    ``model_cfg`` holds ``ModelConfig`` keys that override the small default shape
    (``SMALL_MODEL``). Returns the model that passed.
    """
    cfg = small_model_config({**(model_cfg or {}), "layers": None}, registry)
    cfg = attrs.evolve(cfg, block=resolve_component(block, "block", "block"))
    return check_model(cfg, max_len, registry=registry, batch=batch, atol=atol, seed=seed)


def check_model(
    cfg: ModelConfig, max_len: int = 32, *, registry=None, batch: int = 3, atol: float = 1e-4, seed: int = 0
) -> ByteLM:
    """Check a ``ByteLM`` built from ``cfg`` (with ``block`` or a hybrid ``layers`` list).

    Sequences are ``max_len`` bytes long; ``atol`` bounds the max abs logit difference
    between paths that must agree. Returns the model that passed.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: handing them between threads costs more than it saves
    try:
        return _check_model(cfg, max_len, registry, batch, atol, seed)
    finally:
        torch.set_num_threads(threads)


def _check_model(cfg: ModelConfig, max_len: int, registry, batch: int, atol: float, seed: int) -> ByteLM:
    torch.manual_seed(seed)
    model = _build(cfg, max_len, registry)
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

        _check_causal(model, idx, full, atol)
        _check_rows_independent(model, idx, full, atol)
        _check_state_size(model, idx, max_len)

    _check_gradients(model, idx)
    _check_no_weight_decay(model)
    _check_state_dict_round_trip(model, cfg, max_len, registry, idx, full, atol)
    return model


def _build(cfg: ModelConfig, max_len: int, registry) -> ByteLM:
    model = ByteLM(cfg, max_len, registry=registry).float().eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.numel() and not p.any():
                p.normal_(std=0.05)
    return model


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
            "init_state(max_len=%d)" % (max_len // 2): _state_bytes(small[i]),
            "init_state(max_len=%d)" % (4 * max_len): _state_bytes(large[i]),
            "after %d bytes" % (max_len // 2): _state_bytes(after[i]),
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


def _check_gradients(model: ByteLM, idx: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    logits, _ = model(idx[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 256), idx[:, 1:].reshape(-1))
    loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"parameter {name} gets no gradient (unused in forward?)"
            assert torch.isfinite(p.grad).all(), f"parameter {name} has a non-finite gradient"
    model.zero_grad(set_to_none=True)


def _check_no_weight_decay(model: ByteLM) -> None:
    names = dict(model.named_parameters())
    unknown = sorted(model.no_weight_decay() - set(names))
    assert not unknown, f"no_weight_decay() names parameters that do not exist: {unknown}"


def _check_state_dict_round_trip(model, cfg, max_len, registry, idx, full, atol) -> None:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    state_dict = torch.load(buffer, weights_only=True)
    torch.manual_seed(12345)  # a differently initialised model, overwritten by the load
    restored = ByteLM(cfg, max_len, registry=registry).float().eval()
    restored.load_state_dict(state_dict)
    with torch.no_grad():
        logits, _ = restored(idx)
    _assert_close(logits, full, atol, "the model restored from its state dict gives different logits")
