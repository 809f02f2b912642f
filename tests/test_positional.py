"""Positional encodings: RoPE's relative property at any position, learned and none."""

import pytest
import torch

from charlm.config import config_from_dict
from charlm.registry import get_registry


def positional(kind, max_len=16, d_model=32, n_head=4):
    raw = {"model": {"d_model": d_model, "n_head": n_head, "positional": kind}, "data": {"train": "x.bin"}, "max_steps": 1}
    cfg = config_from_dict(raw).model
    return get_registry().create("positional", cfg.positional, model=cfg, max_len=max_len)


def rotated_at(rope, q, k, q_pos, k_pos):
    """q rotated to position q_pos and k to k_pos (vectors [D] -> [D])."""
    as_seq = lambda v: v.view(1, 1, 1, -1)  # noqa: E731 [B, H, T, D]
    q_rot, _ = rope.rotate(as_seq(q), as_seq(q), q_pos)
    _, k_rot = rope.rotate(as_seq(k), as_seq(k), k_pos)
    return q_rot.flatten(), k_rot.flatten()


@pytest.mark.parametrize("offset", [0, 3, 11])
def test_rope_scores_depend_only_on_the_relative_offset(offset):
    rope = positional("rope", max_len=16)
    torch.manual_seed(0)
    q, k = torch.randn(8), torch.randn(8)
    scores = []
    for k_pos in [0, 4, 100, 5000]:  # inside the precomputed table and far past it
        q_rot, k_rot = rotated_at(rope, q, k, k_pos + offset, k_pos)
        scores.append(torch.dot(q_rot, k_rot).item())
    assert max(scores) - min(scores) < 1e-4


def test_rope_rotation_preserves_norms_and_is_identity_at_zero():
    rope = positional("rope")
    q = torch.randn(2, 4, 5, 8)
    q0, _ = rope.rotate(q[:, :, :1], q[:, :, :1], 0)
    assert torch.allclose(q0, q[:, :, :1])
    q_rot, _ = rope.rotate(q, q, 7)
    assert not torch.allclose(q_rot, q)
    assert torch.allclose(q_rot.norm(dim=-1), q.norm(dim=-1), atol=1e-5)


def test_rope_computes_positions_past_the_table_like_the_table():
    short, long = positional("rope", max_len=8), positional("rope", max_len=64)
    q = torch.randn(1, 2, 6, 8)
    from_scratch, _ = short.rotate(q, q, 20)
    from_table, _ = long.rotate(q, q, 20)
    assert torch.allclose(from_scratch, from_table, atol=1e-6)


def test_learned_positions_add_to_the_embeddings_and_none_is_the_identity():
    learned = positional("learned", max_len=16)
    x = torch.zeros(2, 3, 32)
    assert torch.equal(learned.embed(x, 5), learned.table.weight[5:8].expand(2, 3, 32))
    q = torch.randn(1, 4, 3, 8)
    assert learned.rotate(q, q, 5)[0] is q

    nope = positional("none")
    assert nope.embed(x, 5) is x and nope.rotate(q, q, 5)[1] is q
    assert list(nope.state_dict()) == []
