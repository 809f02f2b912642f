"""The distribution as a user meets it: found through its entry point, options checked like the core's."""

import pytest

from charlm.config import config_from_dict
from charlm.errors import ConfigError
from charlm.registry import Registry


def test_discovered_through_the_installed_entry_point():
    registry = Registry()  # a fresh registry: nothing registered by hand
    (info,) = [p for p in registry.plugins if p.name == "ssm"]
    assert (info.distribution, info.module, info.status) == ("charlm-ssm", "charlm_ssm.plugin", "ok")
    assert [c.name for c in info.components["block"]] == ["ssm"]
    assert "ssm" in registry.names("block")


def test_can_be_disabled():
    registry = Registry(disabled={"charlm-ssm"})
    assert "ssm" not in registry.names("block")


def job(**block):
    return {"max_steps": 1, "device": "cpu", "model": {"d_model": 64, "block": {"kind": "ssm", **block}}}


def test_a_valid_block_table_is_structured_into_the_options():
    cfg = config_from_dict(job(d_state=16, n_heads=4))
    assert cfg.model.block.kind == "ssm"
    assert cfg.model.block.options.heads(cfg.model.d_model) == (4, 32)


@pytest.mark.parametrize(
    "block, message",
    [
        ({"d_state": 0}, "config error: model.block.d_state: must be > 0, got 0"),
        ({"d_state": 2.5}, "config error: model.block.d_state: expected an integer, got 2.5"),
        ({"d_stat": 16}, 'config error: model.block.d_stat: unknown key (did you mean "d_state"?)'),
        ({"head_dim": 48}, "config error: model.block: head_dim: 48 does not divide expand * d_model = 128"),
        ({"n_heads": 3}, "config error: model.block: n_heads: 3 does not divide expand * d_model = 128"),
        ({"head_dim": 16, "n_heads": 8}, "config error: model.block: set head_dim (16) or n_heads (8), not both"),
        ({"dt_min": 0.5, "dt_max": 0.1}, "config error: model.block: dt_min=0.5 must be <= dt_max=0.1"),
    ],
)
def test_bad_options_give_one_clear_error(block, message):
    with pytest.raises(ConfigError) as exc:
        config_from_dict(job(**block))
    assert f"{exc.value.prefix}: {exc.value}" == message


def test_layer_options_are_checked_with_their_index():
    raw = job()
    raw["model"].update(n_layer=2, layers=["transformer", {"kind": "ssm", "head_dim": 48}])
    with pytest.raises(ConfigError, match=r"^model\.layers\[1\]: head_dim: 48 does not divide"):
        config_from_dict(raw)
