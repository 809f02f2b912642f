"""charlm.testing on a third-party block installed as a real plugin (an entry point on sys.path),
in a hybrid stack with the transformer, and on broken blocks that it must reject."""

import sys
import textwrap

import pytest
import torch

import charlm.registry
from charlm.testing import check_block, check_model, small_model_config

PLUGIN = '''
"""Test blocks: a running mean over the bytes so far (a fixed-size recurrent state), and
three broken variants for the contract checks to catch."""

import attrs
import torch
from torch import nn

import charlm


@attrs.define
class RunningMeanConfig:
    scale: float = 1.0


class RunningMean(nn.Module):
    """y = x + proj(gain * mean of x over the bytes so far); state: (sum, count)."""

    max_context = None

    def __init__(self, options, model):
        super().__init__()
        self.scale = options.scale
        self.proj = nn.Linear(model.d_model, model.d_model, bias=False)
        self.gain = nn.Parameter(torch.ones(1, model.d_model))  # 2-D, yet never decayed
        nn.init.normal_(self.proj.weight, std=0.02)

    def forward(self, x, pos, state):
        total, count = (torch.zeros_like(x[:, 0]), 0) if state is None else state
        sums = total.unsqueeze(1) + x.cumsum(dim=1)
        counts = count + torch.arange(1, x.shape[1] + 1, device=x.device, dtype=x.dtype)
        y = x + self.scale * self.proj(self.gain * sums / counts[:, None])
        return y, None if state is None else (sums[:, -1], count + x.shape[1])

    def init_state(self, batch, max_len, device, dtype):
        return torch.zeros(batch, self.proj.in_features, device=device, dtype=dtype), 0

    def no_weight_decay(self):
        return {"gain"}


class PeekingMean(RunningMean):
    """Broken: averages over the whole input, future bytes included."""

    def forward(self, x, pos, state):
        y = x + self.proj(self.gain * x.mean(dim=1, keepdim=True))
        return y, state


class ForgetfulMean(RunningMean):
    """Broken: ignores the state it is given."""

    def forward(self, x, pos, state):
        y, _ = super().forward(x, pos, None)
        return y, state


class HoardingMean(RunningMean):
    """Broken: claims a fixed-size state (max_context None) but keeps every byte it sees."""

    def forward(self, x, pos, state):
        if state is None:
            return super().forward(x, pos, None)
        total, count, seen = state
        y, (total, count) = super().forward(x, pos, (total, count))
        return y, (total, count, torch.cat([seen, x], dim=1))

    def init_state(self, batch, max_len, device, dtype):
        empty = torch.zeros(batch, 0, self.proj.in_features, device=device, dtype=dtype)
        return (*super().init_state(batch, max_len, device, dtype), empty)


def factory(cls):
    return lambda options, model, layer_index, positional, max_len: cls(options, model)


@charlm.hookimpl
def register_blocks(register):
    register("running_mean", factory(RunningMean), config=RunningMeanConfig, help="mean of the bytes so far")
    register("peeking_mean", factory(PeekingMean), config=RunningMeanConfig, help="broken: not causal")
    register("forgetful_mean", factory(ForgetfulMean), config=RunningMeanConfig, help="broken: drops its state")
    register("hoarding_mean", factory(HoardingMean), config=RunningMeanConfig, help="broken: state grows")
'''


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """The process registry, with the test plugin installed through a ``charlm`` entry point."""
    (tmp_path / "charlm_testblocks.py").write_text(PLUGIN)
    dist_info = tmp_path / "charlm_testblocks-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: charlm-testblocks\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text("[charlm]\ntestblocks = charlm_testblocks\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(charlm.registry, "_default", None)
    yield charlm.registry.get_registry()
    sys.modules.pop("charlm_testblocks", None)


def test_a_plugin_block_passes_the_contract(registry):
    assert "running_mean" in registry.names("block")
    model = check_block({"kind": "running_mean", "scale": 0.5})
    assert model.max_context is None
    assert {"blocks.0.gain", "blocks.1.gain"} <= model.no_weight_decay()


def test_a_hybrid_stack_runs_full_prefill_and_decode(registry):
    cfg = small_model_config({"n_layer": 3, "layers": ["transformer", "running_mean", "transformer"]})
    model = check_model(cfg, max_len=24)
    assert [type(b).__name__ for b in model.blocks] == ["TransformerBlock", "RunningMean", "TransformerBlock"]
    assert model.max_context == 24  # the attention layers bound the context; the mean does not


@pytest.mark.parametrize(
    "block, message",
    [
        ("peeking_mean", "byte-by-byte decode differs from the full forward"),
        ("forgetful_mean", "byte-by-byte decode differs from the full forward"),
        ("hoarding_mean", "max_context None but its state size changes"),
    ],
)
def test_a_broken_block_fails_with_a_message_that_names_the_property(registry, block, message):
    with pytest.raises(AssertionError, match=message):
        check_block(block)


def test_the_checks_restore_the_thread_count(registry):
    threads = torch.get_num_threads()
    check_block("running_mean", {"d_model": 16, "n_head": 2, "n_kv_head": None})
    assert torch.get_num_threads() == threads


def test_the_transformer_passes_with_non_default_shapes():
    check_block(
        "transformer", {"d_model": 48, "n_head": 6, "n_kv_head": 3, "mlp": "relu2", "positional": "learned"}, max_len=20
    )
