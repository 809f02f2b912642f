"""ALiBi: per-head slopes, the block contract with gqa, a bias that matters, training through
the CLI, exports, and the config error for an attention that cannot apply a score bias."""

import json
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import charlm_main, charlm_subprocess, make_distribution

from charlm.builtin.positional_encodings import alibi_slopes
from charlm.registry import get_registry
from charlm.testing import build_random, check_block, check_exporter, small_model_config


def test_slopes_are_geometric_for_a_power_of_two_and_interpolated_otherwise():
    assert alibi_slopes(8) == [2.0 ** -i for i in range(1, 9)]
    assert alibi_slopes(4) == [2.0 ** -(2 * i) for i in range(1, 5)]
    # 6 heads: the 4-head slopes, then every other slope of the 8-head sequence (Press et al.)
    assert alibi_slopes(6) == [2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8, 2.0**-1, 2.0**-3]


def test_the_bias_is_minus_slope_times_distance_from_any_offset():
    cfg = small_model_config({"positional": "alibi"})
    alibi = get_registry().create("positional", cfg.positional, model=cfg, max_len=16)
    bias = alibi.bias(3, 10, 7, "cpu")
    assert bias.shape == (cfg.n_head, 3, 10)
    slopes = torch.tensor(alibi_slopes(cfg.n_head))
    for i in range(3):
        for j in range(10):
            assert torch.allclose(bias[:, i, j], -slopes * (7 + i - j))
    assert list(alibi.state_dict()) == []  # nothing to save: rebuilt from n_head


@pytest.mark.parametrize(
    "shape",
    [
        {},  # 4 heads over 2 kv heads
        {"d_model": 48, "n_head": 6, "n_kv_head": 3},  # slopes interpolated
        {"n_kv_head": 1, "attention": {"kind": "gqa", "qk_norm": False}},
    ],
)
def test_alibi_passes_the_block_contract(shape):
    """Full forward == byte-by-byte decode == prefill + decode in chunks, causal, rows
    independent, state dict round trips, bf16 autocast."""
    check_block("transformer", {"positional": "alibi", **shape}, max_len=24, bf16=True)


def test_the_bias_changes_the_model():
    """Not a silent no-op: the same weights with and without ALiBi give other logits."""
    torch.manual_seed(0)
    with_alibi = build_random(small_model_config({"positional": "alibi"}), 16)
    without = build_random(small_model_config({"positional": "none"}), 16)
    without.load_state_dict(with_alibi.state_dict())
    idx = torch.randint(0, 256, (2, 16))
    with torch.no_grad():
        diff = (with_alibi(idx)[0] - without(idx)[0]).abs()
    assert diff[:, 0].max() < 1e-5  # the first byte sees only itself: no distance to bias
    assert diff[:, 1:].max() > 1e-2


@pytest.mark.parametrize("fmt", ["int8", "torch-export"])
def test_alibi_models_export_and_load_back_within_the_gates(fmt):
    report = check_exporter(fmt, model_cfg={"positional": "alibi"})
    assert report.passed


def write_job(path: Path, corpus: Path, out_dir: Path, attention: str = "gqa") -> Path:
    path.write_text(
        textwrap.dedent(f"""
            out_dir = "{out_dir}"
            seq_len = 32
            micro_batch_size = 8
            max_steps = 12
            device = "cpu"

            [model]
            d_model = 32
            n_layer = 2
            n_head = 4
            attention = "{attention}"
            positional = "alibi"

            [data]
            train = "{corpus / 'train.bin'}"
            val = "{corpus / 'val.bin'}"

            [scheduler]
            kind = "cosine"
            warmup_steps = 3

            [logging]
            log_every = 1
            eval_every = 0
        """)
    )
    return path


def test_alibi_trains_from_the_cli(corpus, tmp_path):
    out_dir = tmp_path / "run"
    result = charlm_main("run", str(write_job(tmp_path / "job.toml", corpus, out_dir)))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.5


ATTENTION_PLUGIN = '''
import charlm
from charlm.builtin.attention import GQAConfig
from charlm.builtin.gqa import GroupedQueryAttention


class RotaryOnlyAttention(GroupedQueryAttention):
    """gqa as a plugin written before score biases: it never adds one."""

    applies_bias = False


@charlm.hookimpl
def register_attentions(register):
    register("rotary_only", lambda options, model, layer_index, positional, max_len:
             RotaryOnlyAttention(model, positional, options), config=GQAConfig, help="no score bias")
'''


def test_an_attention_that_cannot_apply_the_bias_is_a_config_error(corpus, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    make_distribution(site, "charlm-rotary-only", "rotary_only", "charlm_rotary_only", ATTENTION_PLUGIN, version="0.1")
    job = write_job(tmp_path / "job.toml", corpus, tmp_path / "run", attention="rotary_only")

    result = charlm_subprocess("run", str(job), site=site)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("config error: model.positional: 'alibi' adds a bias to the attention scores")
    assert "'rotary_only' does not apply" in lines[0]
