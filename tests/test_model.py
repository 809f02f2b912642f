"""ByteLM: built-in configurations, the three run modes, counts, errors."""

import math

import pytest
import torch

from charlm.config import config_from_dict
from charlm.errors import CharLMError, ConfigError
from charlm.model import ByteLM
from charlm.ngram import bucket_of
from charlm.testing import check_model


def model_config(**model):
    raw = {"model": {"d_model": 32, "n_layer": 2, "n_head": 4, **model}, "data": {"train": "x.bin"}, "max_steps": 1}
    return config_from_dict(raw).model


def randomised(cfg, max_len=32, seed=0):
    """A model whose zero-initialised weights are random, so that outputs are not trivially equal."""
    torch.manual_seed(seed)
    model = ByteLM(cfg, max_len).eval()
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(std=0.05)
    return model


BUILTIN_CONFIGS = {
    "defaults": {},
    "learned-mqa-gelu-layernorm-untied-softcap": {
        "positional": "learned",
        "n_kv_head": 1,
        "mlp": "gelu",
        "norm": "layernorm",
        "tie_embeddings": False,
        "logit_softcap": 15.0,
    },
    "nope-mha-relu2-plain-init": {
        "positional": "none",
        "n_kv_head": 4,
        "mlp": {"kind": "relu2", "hidden": 48},
        "attention": {"kind": "gqa", "qk_norm": False},
        "zero_init_projections": False,
    },
    "rope-theta-gqa": {"positional": {"kind": "rope", "theta": 500.0}, "n_kv_head": 2},
    "ngram-2": {"ngram_buckets": [512]},
    "ngram-2-3-4-untied": {"ngram_buckets": [512, 1024, 64], "tie_embeddings": False},
    "ngram-split": {"ngram_buckets": [512, 1024], "ngram_split": True},
}


@pytest.mark.parametrize("name", BUILTIN_CONFIGS)
def test_builtin_configuration_passes_the_block_contract(name):
    check_model(model_config(**BUILTIN_CONFIGS[name]), max_len=24)


@pytest.mark.parametrize("n_kv_head", [1, 2, 4])
@pytest.mark.parametrize("positional", ["rope", "learned", "none"])
def test_prefill_then_decode_equals_full_forward(positional, n_kv_head):
    model = randomised(model_config(positional=positional, n_kv_head=n_kv_head))
    idx = torch.randint(0, 256, (2, 20))
    with torch.no_grad():
        full, _ = model(idx)

        states = model.init_states(2, 32, "cpu", torch.float32)
        prefill, states = model(idx[:, :8], pos=0, states=states)
        steps = [prefill]
        for t in range(8, 20):
            logits, states = model(idx[:, t : t + 1], pos=t, states=states)
            steps.append(logits)
        assert (torch.cat(steps, dim=1) - full).abs().max() < 1e-4

        states = model.init_states(2, 32, "cpu", torch.float32)
        pieces = []
        for start, end in [(0, 5), (5, 6), (6, 13), (13, 20)]:
            logits, states = model(idx[:, start:end], pos=start, states=states)
            pieces.append(logits)
        assert (torch.cat(pieces, dim=1) - full).abs().max() < 1e-4


def test_changing_a_byte_changes_only_later_logits():
    model = randomised(model_config())
    idx = torch.randint(0, 256, (1, 16))
    changed = idx.clone()
    changed[0, 9] = (idx[0, 9] + 1) % 256
    with torch.no_grad():
        before, _ = model(idx)
        after, _ = model(changed)
    assert torch.equal(before[:, :9], after[:, :9])
    assert not torch.allclose(before[:, 9:], after[:, 9:])


def test_parameter_count_matches_a_hand_count():
    d, n_head, n_kv_head, hidden, n_layer, max_len = 32, 4, 2, 64, 2, 16
    head_dim = d // n_head
    attention = d * (n_head + 2 * n_kv_head) * head_dim + n_head * head_dim * d
    mlp = d * 2 * hidden + hidden * d  # swiglu: gate and up, down
    per_layer = attention + mlp + 2 * d  # two RMSNorm gains
    embedding = 256 * d
    tied = embedding + n_layer * per_layer + d

    cfg = model_config(n_kv_head=n_kv_head, mlp={"kind": "swiglu", "hidden": hidden})
    model = ByteLM(cfg, max_len)
    assert model.num_parameters() == tied
    assert model.num_parameters(non_embedding=True) == tied - embedding

    untied = ByteLM(model_config(n_kv_head=2, mlp={"kind": "swiglu", "hidden": hidden}, tie_embeddings=False), max_len)
    assert untied.num_parameters() == tied + 256 * d

    learned = ByteLM(model_config(n_kv_head=2, mlp={"kind": "swiglu", "hidden": hidden}, positional="learned"), max_len)
    assert learned.num_parameters() == tied + max_len * d
    assert learned.num_parameters(non_embedding=True) == tied - embedding
    # the shared table is stored once, not once per layer
    assert [k for k in learned.state_dict() if "positional" in k] == ["positional.table.weight"]


def test_ngram_tables_are_lookups_not_matmuls():
    plain = ByteLM(model_config(n_kv_head=2), 64)
    model = ByteLM(model_config(n_kv_head=2, ngram_buckets=[512, 1024]), 64)
    assert model.num_parameters() == plain.num_parameters() + (512 + 1024) * 32
    assert model.num_parameters(non_embedding=True) == plain.num_parameters(non_embedding=True)
    assert model.flops_per_byte(64) == plain.flops_per_byte(64)
    assert {"ngram.tables.0.weight", "ngram.tables.1.weight"} <= model.no_weight_decay()


def test_split_ngram_tables_each_fill_their_own_dimensions():
    model = randomised(model_config(ngram_buckets=[512, 1024, 64, 64], ngram_split=True))
    assert [tuple(t.weight.shape) for t in model.ngram.tables] == [(512, 8), (1024, 8), (64, 8), (64, 8)]
    assert model.num_parameters() == ByteLM(model_config(), 32).num_parameters() + (512 + 1024 + 64 + 64) * 8
    idx = torch.randint(0, 256, (2, 10))
    before = model.ngram.init_state(2, "cpu")
    full = model.ngram(idx, before)
    with torch.no_grad():
        model.ngram.tables[2].weight.zero_()  # the 4-grams' table: dimensions 16 to 23, and only those
    out = model.ngram(idx, before)
    assert torch.equal(out[..., :16], full[..., :16]) and torch.equal(out[..., 24:], full[..., 24:])
    assert not out[..., 16:24].any() and full[..., 16:24].abs().min() > 0


def test_ngram_hash_spreads_every_bigram_evenly_and_breaks_patterns():
    codes = torch.arange(256)[:, None] * 257 + torch.arange(256)  # every bigram's polynomial code
    counts = torch.bincount(bucket_of(codes.flatten(), 4096), minlength=4096)
    assert counts.min() >= 4 and counts.max() <= 32  # 16 a bucket on average
    # a modulus alone would put codes a table size apart in one bucket, every time
    codes = torch.arange(10000)
    assert (bucket_of(codes, 8192) == bucket_of(codes + 8192, 8192)).float().mean() < 0.01


def test_ngram_embeddings_start_silent():
    model = ByteLM(model_config(ngram_buckets=[64, 128]), 16)
    plain = ByteLM(model_config(), 16)
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("ngram.")})
    idx = torch.randint(0, 256, (2, 10))
    assert torch.equal(model(idx)[0], plain(idx)[0])


@pytest.mark.parametrize("buckets", [[64], [64, 128], [64, 128, 32]])
def test_an_n_gram_table_reads_exactly_n_minus_1_bytes_back(buckets):
    model = randomised(model_config(ngram_buckets=buckets, n_layer=1), max_len=16)
    torch.nn.init.zeros_(model.blocks[0].attn.out.weight)  # no attention: only the n-grams look back
    idx = torch.randint(0, 256, (2, 12))
    changed = idx.clone()
    changed[:, 4] = (changed[:, 4] + 1) % 256
    before, after = model(idx)[0], model(changed)[0]
    reach = 4 + len(buckets)  # the last position whose n-grams contain byte 4
    assert torch.equal(before[:, :4], after[:, :4])
    for t in range(4, reach + 1):
        assert not torch.allclose(before[:, t], after[:, t]), t
    assert torch.equal(before[:, reach + 1 :], after[:, reach + 1 :])


def test_ngram_state_carries_the_last_bytes_across_decode_steps():
    model = randomised(model_config(ngram_buckets=[64, 128]), max_len=32)
    idx = torch.randint(1, 256, (2, 12))
    full, _ = model(idx)
    states = model.init_states(2, 32, torch.device("cpu"), torch.float32)
    assert len(states) == len(model.blocks) + 1 and states[-1].shape == (2, 2) and not states[-1].any()
    _, states = model(idx[:, :1], 0, states)
    assert torch.equal(states[-1], torch.stack([torch.zeros(2, dtype=torch.long), idx[:, 0]], dim=1))
    _, states = model(idx[:, 1:7], 1, states)
    assert torch.equal(states[-1], idx[:, 5:7])
    step, states = model(idx[:, 7:8], 7, states)
    torch.testing.assert_close(step[:, 0], full[:, 7], atol=1e-5, rtol=0)


def test_flops_per_byte_is_6n_plus_the_attention_term():
    cfg = model_config(n_kv_head=2)
    model = ByteLM(cfg, 64)
    matmul_params = model.num_parameters(non_embedding=True) + 256 * 32  # the tied head still multiplies
    assert model.flops_per_byte(64) == 6 * matmul_params + 2 * 12 * 32 * 64


def test_no_weight_decay_names_norms_and_embeddings_only():
    model = ByteLM(model_config(positional="learned", tie_embeddings=False), 16)
    names = model.no_weight_decay()
    assert {"embed.weight", "positional.table.weight", "norm.weight", "blocks.1.norm_mlp.weight"} <= names
    assert not any(n.endswith(("qkv.weight", "out.weight", "down.weight")) for n in names)
    assert "head.weight" not in names
    assert names <= dict(model.named_parameters()).keys()


def test_zero_init_projections_make_every_block_the_identity():
    model = ByteLM(model_config(tie_embeddings=False), 16)
    assert not model.blocks[0].attn.out.weight.any() and not model.blocks[1].mlp.down.weight.any()
    logits, _ = model(torch.randint(0, 256, (2, 8)))
    assert torch.equal(logits, torch.zeros_like(logits))  # and the zero head predicts uniform bytes

    plain = ByteLM(model_config(zero_init_projections=False), 16)
    std = plain.blocks[0].attn.out.weight.std().item()
    assert std == pytest.approx(0.02 / math.sqrt(2 * 2), rel=0.2)


def test_logit_softcap_bounds_the_logits():
    model = randomised(model_config(logit_softcap=2.0))
    with torch.no_grad():
        model.embed.weight.mul_(100)
        logits, _ = model(torch.randint(0, 256, (1, 8)))
    assert logits.abs().max() <= 2.0  # tanh saturates to exactly the cap in float32


def test_max_context_is_the_trained_context_for_attention():
    model = ByteLM(model_config(), 48)
    assert model.max_len == 48 and model.max_context == 48


def test_rope_with_an_odd_head_dim_is_a_config_error():
    with pytest.raises(ConfigError, match=r"model.positional: rope .* even head dim.* = 3"):
        model_config(d_model=12, n_head=4)


def test_decoding_past_a_full_cache_or_the_learned_table_says_what_to_do():
    model = ByteLM(model_config(), 8)
    states = model.init_states(1, 4, "cpu", torch.float32)
    with pytest.raises(CharLMError, match="KV cache full.*re-window"):
        model(torch.zeros(1, 5, dtype=torch.long), pos=0, states=states)

    learned = ByteLM(model_config(positional="learned"), 8)
    with pytest.raises(CharLMError, match="learned positions cover 8 bytes"):
        learned(torch.zeros(1, 2, dtype=torch.long), pos=7)


def test_bf16_autocast_decode_with_a_float32_cache():
    model = randomised(model_config())
    idx = torch.randint(0, 256, (2, 12))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        full, _ = model(idx)
        states = model.init_states(2, 16, "cpu", torch.float32)
        prefill, states = model(idx[:, :6], states=states)
        step, states = model(idx[:, 6:7], pos=6, states=states)
    assert full.dtype == torch.float32 and step.dtype == torch.float32
    assert (torch.cat([prefill, step], 1) - full[:, :7]).abs().max() < 0.1
