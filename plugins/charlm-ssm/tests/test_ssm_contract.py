"""The core's public block contract (``charlm.testing``), for the ssm block alone and in a hybrid stack."""

from charlm.testing import check_block, check_model, small_model_config


def test_ssm_block_contract():
    check_block("ssm")


def test_ssm_block_contract_across_chunks():
    # 8-step chunks over 40 bytes: prefill pieces start and end inside chunks
    check_block({"kind": "ssm", "d_state": 8, "n_heads": 4, "chunk_size": 8, "d_conv": 2}, {"d_model": 48}, max_len=40)


def test_hybrid_stack_contract():
    cfg = small_model_config({"n_layer": 3, "layers": ["ssm", "ssm", "transformer"]})
    check_model(cfg, max_len=40)
