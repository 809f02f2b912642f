"""Sampler plugins: each mask keeps exactly what it promises, and chains compose."""

import pytest
import torch

from charlm.errors import ConfigError, UsageError
from charlm.generate import build_sampler
from charlm.registry import get_registry

NEG_INF = float("-inf")


def step(name, **options):
    spec = {"kind": name, **options}
    return build_sampler([spec]).steps[0]


def kept(logits):
    return set(torch.nonzero(logits[0] > NEG_INF).flatten().tolist())


def test_all_builtins_registered():
    assert {"greedy", "temperature", "top_k", "top_p", "min_p"} <= set(get_registry().names("sampler"))


def test_top_k_keeps_k():
    logits = torch.randn(4, 256, generator=torch.Generator().manual_seed(0))
    out = step("top_k", k=7)(logits, None)
    for row, masked in zip(logits, out):
        survivors = torch.nonzero(masked > NEG_INF).flatten()
        assert len(survivors) == 7
        assert set(survivors.tolist()) == set(row.topk(7).indices.tolist())
        assert torch.equal(masked[survivors], row[survivors])  # kept logits untouched


def test_top_p_keeps_smallest_set_reaching_p():
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]])
    logits = probs.log()
    assert kept(step("top_p", p=0.5)(logits, None)) == {1}
    assert kept(step("top_p", p=0.75)(logits, None)) == {1, 3}
    assert kept(step("top_p", p=0.9)(logits, None)) == {1, 3, 2}
    assert kept(step("top_p", p=1.0)(logits, None)) == {0, 1, 2, 3}
    assert kept(step("top_p", p=0.01)(logits, None)) == {1}  # the best byte always survives


def test_top_p_matches_brute_force():
    logits = torch.randn(8, 256, generator=torch.Generator().manual_seed(1)) * 3
    p = 0.8
    out = step("top_p", p=p)(logits, None)
    for row, masked in zip(logits, out):
        probs = torch.softmax(row, -1).tolist()
        order = sorted(range(256), key=lambda i: -probs[i])
        size = next(n for n in range(1, 257) if sum(probs[i] for i in order[:n]) >= p)
        assert set(torch.nonzero(masked > NEG_INF).flatten().tolist()) == set(order[:size])


def test_min_p_keeps_tokens_near_the_best():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    assert kept(step("min_p", p=0.25)(probs.log(), None)) == {0, 1, 2}  # threshold 0.125
    assert kept(step("min_p", p=0.5)(probs.log(), None)) == {0, 1}  # threshold 0.25
    assert kept(step("min_p", p=0.0)(probs.log(), None)) == {0, 1, 2, 3}


def test_greedy_and_temperature():
    logits = torch.tensor([[0.0, 3.0, 1.0], [2.0, 0.0, 1.0]])
    assert build_sampler(temperature=0)(logits, None).tolist() == [1, 0]
    assert torch.allclose(step("temperature", value=2.0)(logits, None), logits / 2)


def test_chain_from_flags_in_order():
    chain = build_sampler(temperature=0.7, top_k=5, top_p=0.9, min_p=0.1)
    assert len(chain.steps) == 4
    assert build_sampler().steps == []  # plain sampling from the softmax


def test_chain_samples_only_from_kept_set():
    logits = torch.randn(1, 256, generator=torch.Generator().manual_seed(2)).expand(500, -1)
    gen = torch.Generator().manual_seed(3)
    tokens = build_sampler(["top_k", {"kind": "top_p", "p": 0.5}])(logits, gen)
    top = set(logits[0].topk(50).indices.tolist())
    assert set(tokens.tolist()) <= top
    assert len(set(tokens.tolist())) > 1
    assert build_sampler(top_k=1)(logits, gen).tolist() == logits.argmax(-1).tolist()


def test_bad_sampler_specs_are_clear():
    with pytest.raises(ConfigError, match='unknown sampler "top_q"'):
        build_sampler(["top_q"])
    with pytest.raises(ConfigError, match=r"sampler\[0\]\.k: must be > 0, got 0"):
        build_sampler(top_k=0)
    with pytest.raises(ConfigError, match=r"sampler\[0\]\.p: must be in \(0.0, 1.0\], got 1.5"):
        build_sampler(top_p=1.5)
    with pytest.raises(ConfigError, match=r"sampler\[0\]\.p: must be in \[0.0, 1.0\], got -0.1"):
        build_sampler(min_p=-0.1)
    with pytest.raises(UsageError, match="temperature must be >= 0"):
        build_sampler(temperature=-1)
