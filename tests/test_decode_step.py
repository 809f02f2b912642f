"""The decode step's shortcuts compute exactly what they replace: the sampler's draw is
``torch.multinomial``'s for the same generator state, and RoPE's rotation is the textbook
half-split formula bit for bit (so cached text and compressed files do not change)."""

import pytest
import torch

from charlm.builtin.positional_encodings import Rotary
from charlm.generate import build_sampler, draw


@pytest.mark.parametrize("batch", [1, 3])
def test_draw_picks_what_multinomial_picks(batch):
    for seed in range(200):
        logits = torch.randn(batch, 256, generator=torch.Generator().manual_seed(seed)) * (1 + seed % 5)
        if seed % 2:  # masked tokens (top-k) have probability 0 and are never drawn
            logits[:, 40:] = float("-inf")
        probs = torch.softmax(logits, dim=-1)
        ours, theirs = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        for _ in range(3):  # and the generators stay in step
            expected = torch.multinomial(probs, 1, generator=theirs).squeeze(-1)
            assert torch.equal(draw(probs, ours), expected)


def test_draw_leaves_the_probabilities_alone():
    probs = torch.softmax(torch.randn(2, 256), dim=-1)
    kept = probs.clone()
    draw(probs, torch.Generator().manual_seed(0))
    assert torch.equal(probs, kept)


def test_sampler_chain_samples_as_before():
    """temperature -> softmax -> multinomial, the chain's draw before the shortcut."""
    logits = torch.randn(4, 256)
    chain = build_sampler(temperature=0.7, top_k=20)
    kth = torch.topk(logits / 0.7, 20).values[:, -1:]
    probs = torch.softmax((logits / 0.7).masked_fill(logits / 0.7 < kth, float("-inf")), dim=-1)
    expected = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(3)).squeeze(-1)
    assert torch.equal(chain(logits, torch.Generator().manual_seed(3)), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("pos", [0, 7, 40])  # 40: past the table, computed on demand
def test_rotation_is_the_half_split_formula_bit_for_bit(dtype, pos):
    head_dim, length = 16, 5
    rope = Rotary(head_dim, max_len=32, theta=10000.0)
    q, k = torch.randn(2, 3, length, head_dim, dtype=dtype), torch.randn(2, 1, length, head_dim, dtype=dtype)
    positions = torch.arange(pos, pos + length, dtype=torch.float64)
    angles = torch.outer(positions, rope.inv_freq)
    cos, sin = angles.cos().float().to(dtype), angles.sin().float().to(dtype)

    def textbook(x):
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)

    q_rot, k_rot = rope.rotate(q, k, pos)
    assert torch.equal(q_rot, textbook(q)) and torch.equal(k_rot, textbook(k))
