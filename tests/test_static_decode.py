"""The compiled static decode step (charlm.static_decode) decodes what the model's own step
decodes, and a runner falls back to other steps where it cannot serve or build one."""

import pytest
import torch

from charlm.builtin.transformer_block import TransformerBlock
from charlm.generate import Window, build_sampler, sample_tokens
from charlm.model import ByteLM
from charlm.runners import ModelRunner
from charlm.static_decode import static_step_support
from tests.helpers import model_job


def random_model(seq_len: int, **options) -> ByteLM:
    torch.manual_seed(0)
    model = ByteLM(model_job(seq_len, **options).model, seq_len).eval()
    with torch.no_grad():
        for p in model.parameters():  # zero-initialised heads and tables would hide a wrong step
            p.normal_(0, 0.3)
    return model


def sampled(runner: ModelRunner, window: int, new: int, samples: int = 1) -> list[list[int]]:
    generator = torch.Generator().manual_seed(5)
    tokens = sample_tokens(runner, b"to be", new, build_sampler(temperature=1.0), Window(window), generator, samples)
    return [t.tolist() for t in tokens]


def test_the_static_step_samples_what_the_model_samples_across_windows():
    """Every kind of input the step handles (n-gram state, grouped rotary heads with
    normalised queries and keys, soft-capped untied head) and re-windows (prefills that
    the model's forward writes into the caches the step then reads), for a batch of two
    (a prefill's n-gram state is a strided slice, which the program must not misread)."""
    model = random_model(
        24,
        n_head=4,
        n_kv_head=2,
        ngram_buckets=[64, 128],
        tie_embeddings=False,
        logit_softcap=15.0,
        attention={"kind": "gqa", "qk_norm": True},
    )
    eager, compiled = ModelRunner(model), ModelRunner(model)
    compiled.compile()
    assert compiled.decode is model  # the static step, not torch.compile

    expected = sampled(eager, 24, 70, samples=2)
    assert sampled(compiled, 24, 70, samples=2) == expected  # 70 bytes through a 24-byte window: several re-encodes
    assert set(compiled.static_steps) == {2}  # one program, built at the first prefill

    logits_eager, state_eager = eager.start(torch.tensor([[1, 2, 3], [4, 5, 6]]))
    logits, state = compiled.start(torch.tensor([[1, 2, 3], [4, 5, 6]]))
    for byte in range(10):
        token = torch.tensor([byte * 25, 255 - byte])
        logits_eager, state_eager = eager.step(token, state_eager)
        logits, state = compiled.step(token, state)
        torch.testing.assert_close(logits, logits_eager, rtol=1e-5, atol=1e-5)
    assert [s.length for s in state[0][:-1]] == [13, 13]  # the caches count what the step wrote


def test_a_gpt2_like_model_steps_statically_as_its_own_step():
    """Learned positions, LayerNorm, a GELU MLP, a tied head, full attention without QK-norm:
    the shape bench/vs_nanogpt.py trains like for like."""
    model = random_model(
        16, n_head=2, positional="learned", norm="layernorm", mlp="gelu", tie_embeddings=True,
        attention={"kind": "gqa", "qk_norm": False},
    )  # fmt: skip
    eager, compiled = ModelRunner(model), ModelRunner(model)
    compiled.compile()
    assert compiled.decode is model
    assert sampled(compiled, 16, 40) == sampled(eager, 16, 40)  # re-windows at learned position 0 again
    assert set(compiled.static_steps) == {1}


@pytest.mark.parametrize(
    "options, reason",
    [
        ({"positional": "alibi"}, "positional encoding ALiBi"),
        ({"n_layer": 2, "plugin_block": 1}, "block 1 is not a transformer block"),
    ],
)
def test_models_the_static_step_cannot_run_say_why_and_compile_otherwise(options, reason):
    plugin_block = options.pop("plugin_block", None)
    model = random_model(16, **options)
    if plugin_block is not None:  # a plugin's subclass may step differently: the static step does not guess
        model.blocks[plugin_block].__class__ = type("PluginBlock", (TransformerBlock,), {})
    assert reason in static_step_support(model, torch.device("cpu"))
    runner = ModelRunner(model)
    runner.compile()
    assert runner.static_steps is None and runner.decode is not model  # torch.compile's


def test_a_failed_build_warns_and_decodes_without_it(monkeypatch, capsys):
    """Without a working C++ compiler AOTInductor fails; the runner says so once and decodes eagerly."""
    monkeypatch.setattr(torch._inductor.config.cpp, "cxx", ("/nonexistent/c++",))
    model = random_model(16)
    eager, compiled = ModelRunner(model), ModelRunner(model)
    compiled.compile()
    assert sampled(compiled, 16, 20) == sampled(eager, 16, 20)
    assert compiled.static_steps == {1: None}
    assert capsys.readouterr().err.count("warning: compiling the decode step failed") == 1
