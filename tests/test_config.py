"""Job config: strict structuring, every validation rule, overrides, TOML/YAML, show round-trip."""

import copy
import json
import subprocess
import sys
import tomllib

import pytest
from helpers import ROOT, charlm_main

from charlm.cli import main
from charlm.config import (
    JobConfig,
    apply_overrides,
    config_from_dict,
    config_to_toml,
    load_config,
    parse_duration,
    parse_override,
    to_dict,
)
from charlm.errors import ConfigError

MICRO = ROOT / "charlm/recipes/micro.toml"
BASE = {
    "max_steps": 10,
    "data": {"train": "d/train.bin", "val": "d/val.bin"},
    "model": {"d_model": 64, "n_layer": 2, "n_head": 4, "n_kv_head": 2},
}


def job(**changes) -> dict:
    raw = copy.deepcopy(BASE)
    return apply_overrides(raw, [f"{k.replace('__', '.')}={v}" for k, v in changes.items()])


def error_of(raw: dict) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw, world_size=1)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults_resolve_every_component():
    cfg = config_from_dict(job(), world_size=1)
    assert isinstance(cfg, JobConfig)
    for spec in (cfg.model.block, cfg.model.attention, cfg.model.positional, cfg.model.mlp, cfg.model.norm, cfg.optimizer, cfg.scheduler):
        assert spec.kind
    assert cfg.optimizer.options.lr == pytest.approx(3e-3)
    assert cfg.model.kv_heads == 2 and cfg.model.head_dim == 16


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"model__n_head": 6}, "model.n_head: 6 does not divide d_model=64"),
        ({"model__n_kv_head": 3}, "model.n_kv_head: 3 does not divide n_head=4"),
        ({"model__d_model": 36}, "model.positional:"),  # head dim 9: RoPE rotates pairs
        ({"batch_size_tokens": 1000}, "batch_size_tokens: 1000 is not a multiple of micro_batch_size * seq_len * world_size = 16 * 128 * 1 = 2048"),
        ({"precision": '"fp16"', "device": '"cpu"'}, "precision: fp16 needs a CUDA device"),
        ({"model__nlayer": 3}, 'model.nlayer: unknown key (did you mean "n_layer"?)'),
        ({"model__block": '"mamba9"'}, 'model.block: unknown block "mamba9" (available: '),
        ({"scheduler__kind": '"cosin"'}, 'scheduler: unknown scheduler "cosin" (available: constant, cosine, wsd); did you mean "cosine"?'),
        ({"model__n_layer": 2.9}, "model.n_layer: expected an integer, got 2.9"),
        ({"model__tie_embeddings": '"false"'}, "model.tie_embeddings: expected true or false, got 'false'"),
        ({"optimizer__lr": '"fast"'}, "optimizer.lr: expected a number, got 'fast'"),
        ({"scheduler__warmup_steps": -1}, "scheduler.warmup_steps: must be >= 0, got -1"),
        ({"model__n_layer": 0}, "model.n_layer: must be > 0, got 0"),
        ({"model__ngram_buckets": "[8192, 0]"}, "model.ngram_buckets: each table needs 1 to 16777216 rows, got 0"),
        ({"model__ngram_split": "true", "model__ngram_buckets": "[8, 8, 8]"}, "model.ngram_split: 3 n-gram tables cannot share d_model=64 equally"),
        ({"precision": '"fp8"'}, "precision: expected one of 'fp32', 'bf16', 'fp16', 'auto', got 'fp8'"),
        ({"compile": '"yes"'}, "compile:"),
        ({"max_time": '"soon"'}, "max_time: cannot read 'soon' as a duration"),
        ({"optimizer__betas": "[0.9]"}, "optimizer.betas: expected 2 items, got 1"),
        ({"device": '"cuda:7"'}, "device: 'cuda:7'"),
        ({"device": '"tpu"'}, "device: unknown device 'tpu'"),
    ],
)
def test_validation_rules_name_the_key(changes, expected):
    assert expected in error_of(job(**changes))


def test_run_needs_an_end():
    raw = job()
    del raw["max_steps"]
    assert error_of(raw).startswith("max_steps: set max_steps or max_time")


def test_batch_math_counts_world_size():
    raw = job(batch_size_tokens=4096, micro_batch_size=8, seq_len=128)
    assert config_from_dict(raw, world_size=2).grad_accum_steps(2) == 2
    assert "world_size = 8 * 128 * 3" in error_of_world(raw, 3)


def error_of_world(raw, world_size):
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw, world_size=world_size)
    return str(info.value)


def test_component_options_and_string_shorthand():
    cfg = config_from_dict(job(scheduler='"wsd"', scheduler__decay_fraction=0.25), world_size=1)
    assert cfg.scheduler.kind == "wsd" and cfg.scheduler.options.decay_fraction == 0.25
    assert "scheduler.decay_fraction: unknown key" in error_of(job(scheduler='"constant"', scheduler__decay_fraction=0.25))


def test_parse_override_values_are_toml_literals():
    assert parse_override("model.n_layer=4") == (["model", "n_layer"], 4)
    assert parse_override("optimizer.lr=3e-4") == (["optimizer", "lr"], 3e-4)
    assert parse_override("device=cpu") == (["device"], "cpu")
    assert parse_override('max_time="5m"') == (["max_time"], "5m")
    assert parse_override("optimizer.betas=[0.8, 0.9]") == (["optimizer", "betas"], [0.8, 0.9])
    assert parse_override("compile=false") == (["compile"], False)
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        parse_override("model.n_layer")
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        parse_override("model..x=1")


def test_parse_duration():
    assert parse_duration("5m") == 300 and parse_duration("90") == 90 and parse_duration("1h30m") == 5400
    assert parse_duration("2.5m") == 150
    for bad in ("", "5 minutes", "0s", "m"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_toml_and_yaml_give_the_same_job(tmp_path):
    yaml = pytest.importorskip("yaml")
    toml_path = tmp_path / "job.toml"
    toml_path.write_text(
        'max_time = "5m"\nseq_len = 64\n[model]\nd_model = 64\nn_head = 4\n[model.positional]\nkind = "rope"\ntheta = 500.0\n'
        '[data]\ntrain = "a.bin"\n[optimizer]\nkind = "adamw"\nlr = 0.0003\nbetas = [0.8, 0.9]\n'
    )
    yaml_path = tmp_path / "job.yaml"
    yaml_path.write_text(
        yaml.safe_dump(
            {
                "max_time": "5m",
                "seq_len": 64,
                "model": {"d_model": 64, "n_head": 4, "positional": {"kind": "rope", "theta": 500.0}},
                "data": {"train": "a.bin"},
                "optimizer": {"kind": "adamw", "lr": 0.0003, "betas": [0.8, 0.9]},
            }
        )
    )
    assert to_dict(load_config(toml_path, world_size=1)) == to_dict(load_config(yaml_path, world_size=1))


def test_show_round_trips(tmp_path):
    cfg = config_from_dict(job(model__layers='["transformer", "transformer"]', max_time='"90s"', scheduler='"wsd"'), world_size=1)
    shown = tmp_path / "shown.toml"
    shown.write_text(config_to_toml(cfg))
    again = load_config(shown, world_size=1)
    assert to_dict(again) == to_dict(cfg)
    assert config_to_toml(again) == config_to_toml(cfg)


def test_overrides_apply_on_top_of_the_file(tmp_path):
    path = tmp_path / "job.toml"
    path.write_text(config_to_toml(config_from_dict(job(), world_size=1)))
    cfg = load_config(path, ["model.n_layer=3", "optimizer.lr=1e-3", "model.positional.theta=500.0"], world_size=1)
    assert cfg.model.n_layer == 3 and cfg.optimizer.options.lr == 1e-3 and cfg.model.positional.options.theta == 500.0


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("seq_len = [\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(bad)


def test_validate_micro_config_and_a_broken_copy(tmp_path):
    ok = charlm_main("config", "validate", "charlm/recipes/micro.toml", "--device", "cpu")
    assert ok.returncode == 0, ok.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text((ROOT / "charlm/recipes/micro.toml").read_text().replace("n_head = 4", "n_head = 5"))
    bad = charlm_main("config", "validate", str(broken))
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == ["config error: model.n_head: 5 does not divide d_model=128"]


def test_config_show_cli_applies_shortcuts(capsys):
    assert main(["config", "show", "charlm/recipes/micro.toml", "--max-steps", "7", "--device", "cpu", "--no-val", "model.n_layer=2"]) == 0
    out = capsys.readouterr().out
    assert "max_steps = 7" in out and 'device = "cpu"' in out and "n_layer = 2" in out and "eval_every = 0" in out


def test_importing_the_config_does_not_import_torch():
    code = "import charlm.config, sys; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_toml_round_trip_of_every_latin1_character_and_more(tmp_path):
    text = "".join(map(chr, range(0x100))) + "é€ž😀\u2028\ufeff"
    cfg = config_from_dict(job(), world_size=1)
    cfg.out_dir = text
    shown = config_to_toml(cfg)
    assert tomllib.loads(shown)["out_dir"] == text
    path = tmp_path / "shown.toml"
    path.write_text(shown, encoding="utf-8")
    assert load_config(path, world_size=1).out_dir == text


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"optimizer__lr": "nan"}, "optimizer.lr: expected a finite number, got nan"),
        ({"grad_clip": "inf"}, "grad_clip: expected a finite number, got inf"),
        ({"optimizer__betas": "[0.9, -inf]"}, "optimizer.betas[1]: expected a finite number, got -inf"),
        ({"seed": 2**64}, "seed: 18446744073709551616 does not fit in 64 bits"),
        ({"model__layers": '["transformer", 3]'}, 'model.layers[1]: expected the name of a block or a table with "kind", got 3'),
        ({"model__n_kv_head": "true"}, "model.n_kv_head: expected an integer, got True"),
    ],
)
def test_non_finite_and_out_of_range_numbers_name_the_key(changes, expected):
    assert error_of(job(**changes)) == expected


def _nested(depth: int, open_: str, close: str) -> str:
    return open_ * depth + "1" + close * depth


@pytest.mark.parametrize("name, text", [
    ("deep.toml", "seed = " + _nested(5000, "[", "]")),
    ("deep.toml", "seed = " + _nested(1000, "{a = ", "}")),
    ("deep.yaml", "seed: " + _nested(5000, "[", "]")),
])
def test_a_deeply_nested_file_is_one_config_error(tmp_path, capsys, name, text):
    path = tmp_path / name
    path.write_text(text)
    assert main(["config", "validate", str(path)]) == 2
    assert capsys.readouterr().err == f"config error: {path}: nested too deeply\n"


def test_a_deeply_nested_override_or_value_is_one_config_error(capsys):
    assert main(["config", "validate", str(MICRO), "seed=" + _nested(5000, "[", "]")]) == 2
    assert capsys.readouterr().err == "config error: override seed: nested too deeply\n"
    deep = 1
    for _ in range(3000):  # parsed by Python, not TOML: cattrs' recursion is what meets it
        deep = [deep]
    with pytest.raises(ConfigError, match=r"^config: nested too deeply$"):
        config_from_dict({**BASE, "model": {**BASE["model"], "layers": deep}})


@pytest.mark.parametrize("key", ["a\nb", "x\ty", "\x1b[31m", "a\rb"])
def test_keys_with_control_characters_are_shown_escaped_on_one_line(tmp_path, capsys, key):
    assert main(["config", "validate", str(MICRO), f"{key}=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"config error: {key!r}: unknown key") and err.count("\n") == 1
    path = tmp_path / "job.toml"
    path.write_text(f"[data]\n{json.dumps(key)} = 1\n")  # JSON's escapes are TOML's
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"data.{key!r}: unknown key") and "\n" not in str(caught.value)


def test_an_error_quoting_a_key_with_line_breaks_stays_one_line(capsys):
    assert main(["config", "validate", "charlm/recipes/micro.toml", "a\nb\u2028c=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("config error: 'a\\nb\\u2028c': unknown key")
