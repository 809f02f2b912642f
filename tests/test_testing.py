"""charlm.testing on third-party components installed as a real plugin (an entry point on
sys.path): a block alone and in a hybrid stack with the transformer, the built-in samplers,
exporters and data sources, and broken components of each kind that it must reject."""

import hashlib
import sys

import pytest
import torch

import charlm.registry
from charlm.testing import (
    check_block,
    check_data_source,
    check_exporter,
    check_model,
    check_sampler,
    small_model_config,
)

PLUGIN = '''
"""Test components: a running mean over the bytes so far (a fixed-size recurrent state), and
broken variants of a block, a sampler, an exporter and a data source for the checks to catch."""

from pathlib import Path

import attrs
import torch
from torch import nn

import charlm
from charlm.builtin.export_formats import SafetensorsExporter
from charlm.builtin.exporters import SafetensorsOptions


@attrs.define
class RunningMeanConfig:
    scale: float = 1.0


class RunningMean(nn.Module):
    """y = x + proj(gain * mean of x over the bytes so far); state: (sum, count)."""

    max_context = None

    def __init__(self, options, model, **context):
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


class TabledMean(RunningMean):
    """Broken: a learned gain per position, in a table sized by the trained context."""

    def __init__(self, options, model, max_len, **context):
        super().__init__(options, model)
        self.position_gain = nn.Parameter(torch.ones(max_len, 1))

    def forward(self, x, pos, state):
        y, state = super().forward(x, pos, state)
        return y * self.position_gain[pos : pos + x.shape[1]], state


class SharingMean(RunningMean):
    """Broken: keeps the model's shared positional encoding as a submodule."""

    def __init__(self, options, model, positional, **context):
        super().__init__(options, model)
        self.positional = positional


class TiedMean(RunningMean):
    """Broken: one weight stored under two names."""

    def __init__(self, options, model, **context):
        super().__init__(options, model)
        self.back = nn.Linear(model.d_model, model.d_model, bias=False)
        self.back.weight = self.proj.weight

    def forward(self, x, pos, state):
        y, state = super().forward(x, pos, state)
        return y + 0.1 * self.back(y), state


class EmaMean(RunningMean):
    """Broken under bf16 autocast: lerps a float32 state toward a bfloat16 projection."""

    def forward(self, x, pos, state):
        ema = torch.zeros_like(x[:, 0]) if state is None else state[0]
        outputs = []
        for t in range(x.shape[1]):
            ema = torch.lerp(ema, self.proj(x[:, t]), 0.5)
            outputs.append(x[:, t] + self.gain * ema)
        return torch.stack(outputs, dim=1), None if state is None else (ema, 0)


@attrs.define
class CheckedConfig:
    scale: float = 1.0

    def check(self, job):
        """Broken: reads a key that the model config does not have."""
        if job.model.width < 8:
            raise ValueError("too narrow")


def factory(cls):
    return lambda options, model, layer_index, positional, max_len: cls(
        options, model, positional=positional, max_len=max_len
    )


def global_rng_sampler(options):
    """Broken: ignores the generator it is given."""
    return lambda logits, generator: torch.multinomial(torch.softmax(logits, -1), 1).squeeze(-1)


def uniform_sampler(options):
    """Broken: a picker that ignores the logits, -inf included."""
    return lambda logits, generator: torch.randint(0, logits.shape[-1], logits.shape[:1], generator=generator)


class RoundingExporter(SafetensorsExporter):
    """Broken: writes bf16 weights but claims to be exact."""

    def __init__(self, options):
        super().__init__(SafetensorsOptions(dtype="bf16"))
        self.exact = True


class NamelessCorpus:
    """Broken: a corpus that does not say where it comes from."""

    def __init__(self, options):
        pass

    def fetch(self, dest):
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "doc.txt").write_text("a document")
        return [dest / "doc.txt"]

    def provenance(self):
        return {}


class StrayCorpus(NamelessCorpus):
    """Broken: writes its document outside the directory it is given."""

    def fetch(self, dest):
        stray = dest.parent / "elsewhere.txt"
        stray.write_text("a document")
        return [stray]

    def provenance(self):
        return {"url": "file:///elsewhere.txt"}


@charlm.hookimpl
def register_blocks(register):
    register("running_mean", factory(RunningMean), config=RunningMeanConfig, help="mean of the bytes so far")
    register("peeking_mean", factory(PeekingMean), config=RunningMeanConfig, help="broken: not causal")
    register("forgetful_mean", factory(ForgetfulMean), config=RunningMeanConfig, help="broken: drops its state")
    register("hoarding_mean", factory(HoardingMean), config=RunningMeanConfig, help="broken: state grows")
    register("tabled_mean", factory(TabledMean), config=RunningMeanConfig, help="broken: table sized by max_len")
    register("sharing_mean", factory(SharingMean), config=RunningMeanConfig, help="broken: stores the positional")
    register("tied_mean", factory(TiedMean), config=RunningMeanConfig, help="broken: one weight, two names")
    register("ema_mean", factory(EmaMean), config=RunningMeanConfig, help="broken under bf16 autocast")
    register("checked_mean", factory(RunningMean), config=CheckedConfig, help="broken: check(job) crashes")


@charlm.hookimpl
def register_samplers(register):
    register("global_rng", global_rng_sampler, help="broken: ignores the generator")
    register("uniform", uniform_sampler, help="broken: draws -inf bytes")


@charlm.hookimpl
def register_exporters(register):
    register("rounding", RoundingExporter, help="broken: bf16 weights claimed exact")


@charlm.hookimpl
def register_data_sources(register):
    register("nameless", NamelessCorpus, help="broken: no provenance")
    register("stray", StrayCorpus, help="broken: writes outside dest")
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


@pytest.mark.parametrize(
    "block, model_cfg, message",
    [
        ("tabled_mean", {}, r"bytes failed with RuntimeError.*size no table by max_len"),
        ("sharing_mean", {}, r"blocks.0.positional is the same module as positional.*bound method"),
        ("sharing_mean", {"positional": "learned"}, r"blocks.0.positional is the same module as positional"),
        ("tied_mean", {}, r"entries share memory: .*blocks.0.back.weight.*give every tensor one owner"),
        ("checked_mean", {}, r"model.block: CheckedConfig.check\(job\) crashed with AttributeError"),
    ],
)
def test_the_checks_catch_blocks_that_broke_real_commands(registry, block, model_cfg, message):
    with pytest.raises(AssertionError, match=message):
        check_block(block, model_cfg)


def test_the_bf16_pass_is_optional_and_catches_mixed_dtypes(registry):
    check_block("ema_mean")
    with pytest.raises(AssertionError, match=r"the forward fails under bf16 autocast.*cast to one dtype"):
        check_block("ema_mean", bf16=True)


def test_the_builtin_blocks_pass_the_bf16_pass(registry):
    check_block("transformer", bf16=True)
    check_block("running_mean", bf16=True)


@pytest.mark.parametrize("name", ["greedy", "temperature", "top_k", "top_p", "min_p"])
def test_the_builtin_samplers_pass(name):
    check_sampler(name)


def test_a_sampler_factory_with_options_passes():
    from charlm.builtin.sampler_steps import top_k
    from charlm.builtin.samplers import TopKConfig

    check_sampler(top_k, TopKConfig(k=3))
    check_sampler("top_p", {"p": 0.5})


@pytest.mark.parametrize(
    "name, message",
    [
        ("global_rng", r"same seeded generator gave different tokens.*never the global RNG"),
        ("uniform", r"drew a byte whose logit is -inf"),
    ],
)
def test_broken_samplers_fail(registry, name, message):
    with pytest.raises(AssertionError, match=message):
        check_sampler(name)


def test_a_sampler_that_edits_its_input_fails():
    def in_place(options):  # subtracts the max (harmless) from the caller's tensor
        return lambda logits, generator: logits.sub_(logits.amax(dim=-1, keepdim=True))

    with pytest.raises(AssertionError, match=r"changed the logits it was given in place"):
        check_sampler(in_place)


@pytest.mark.parametrize("name", ["int8", "safetensors"])
def test_the_builtin_exporters_pass(name):
    report = check_exporter(name)
    assert report.passed and report.gates


def test_an_exporter_that_rounds_but_claims_exact_fails(registry):
    with pytest.raises(AssertionError, match=r"fails the exact export gates: max_logit_diff .*exact = False"):
        check_exporter("rounding")


def test_the_builtin_data_source_passes_on_a_local_copy(tmp_path):
    text = b"".join(b"line %d of a play\n\n" % i for i in range(200))
    (tmp_path / "input.txt").write_bytes(text)
    options = {"url": (tmp_path / "input.txt").as_uri(), "sha256": hashlib.sha256(text).hexdigest(), "size": len(text)}
    meta = check_data_source("tinyshakespeare", options)
    assert meta["source"]["name"] == "tinyshakespeare" and meta["source"]["bytes"] == len(text)


@pytest.mark.parametrize(
    "name, message",
    [
        ("nameless", r"provenance\(\) must return a non-empty dict"),
        ("stray", r"outside the directory it was given"),
    ],
)
def test_broken_data_sources_fail(registry, name, message):
    with pytest.raises(AssertionError, match=message):
        check_data_source(name)
