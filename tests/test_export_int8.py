"""int8: quantisation error bounded by the scale, int8-resident == expanded (bf16-close in decode
steps, which read the int8 weight directly), wrong metadata is a clear error."""

import json
import struct

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from charlm.artifact import load_artifact
from charlm.config import config_from_dict
from charlm.errors import CharLMError
from charlm.model import ByteLM
from charlm.quantize import PACKED_MAX_ROWS, Int8Embedding, Int8Linear, dequantize, quantize


@pytest.mark.parametrize("group_size", [0, 16])
def test_quantisation_error_is_at_most_half_a_step(group_size):
    torch.manual_seed(0)
    w = torch.randn(48, 64) * torch.logspace(-3, 1, 48)[:, None]  # rows of very different ranges
    w[5] = 0  # an all-zero row must not divide by zero
    q, scale = quantize(w, group_size)
    assert q.dtype == torch.int8 and q.abs().max() <= 127
    assert scale.shape == (48, 64 // group_size if group_size else 1)
    err = (dequantize(q, scale) - w).abs()
    step = scale.repeat_interleave(group_size or 64, dim=1)
    assert torch.all(err <= step / 2 * (1 + 1e-5))
    assert torch.all(dequantize(q, scale)[5] == 0)


def test_group_size_must_divide():
    with pytest.raises(ValueError, match="does not divide"):
        quantize(torch.randn(4, 10), 4)


@pytest.fixture(scope="module")
def int8_file(tmp_path_factory):
    from charlm.builtin.export_formats import Int8Exporter
    from charlm.builtin.exporters import Int8Options

    torch.manual_seed(0)
    job = config_from_dict({"seq_len": 16, "max_steps": 1, "model": {"d_model": 32, "n_layer": 1, "n_head": 2,
                            "zero_init_projections": False, "ngram_buckets": [64, 32]}})  # tied: the head reads the int8 table
    model = ByteLM(job.model, max_len=job.seq_len).eval()
    with torch.no_grad():
        for table in model.ngram.tables:  # zero-initialised: give the n-gram tables something to quantise
            table.weight.normal_(std=0.02)
    path = tmp_path_factory.mktemp("int8") / "m.int8"
    Int8Exporter(Int8Options()).export(model, job, path)
    return path, model


def test_int8_resident_matches_expanded(int8_file):
    path, source = int8_file
    resident, _ = load_artifact(path, resident="int8")
    expanded, _ = load_artifact(path)
    assert any(isinstance(m, (Int8Linear, Int8Embedding)) for m in resident.modules())
    assert not any(isinstance(m, (Int8Linear, Int8Embedding)) for m in expanded.modules())
    assert all(p.dtype != torch.int8 for p in expanded.state_dict().values())
    x = torch.randint(0, 256, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(resident(x)[0], expanded(x)[0], atol=1e-4, rtol=1e-4)
        assert (expanded(x)[0] - source(x)[0]).abs().max() < 0.05


def rewrite_metadata(src, dst, **changes):
    """Copy a safetensors file with some metadata entries replaced (None deletes one)."""
    raw = src.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + size])
    meta = header["__metadata__"]
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value if isinstance(value, str) else json.dumps(value)
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    dst.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + size :])
    return dst


def quant(path):
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    return json.loads(json.loads(raw[8 : 8 + size])["__metadata__"]["quantization"])


@pytest.mark.parametrize(
    "change, message",
    [
        ({"format": "other"}, "not a charlm artefact"),
        ({"format_version": "9"}, "format version '9' is not supported"),
        ({"weights": "int4"}, "weights='int4' is not one of"),
        ({"config": "{not json"}, "metadata 'config' is not valid JSON"),
        ({"quantization": None}, "metadata has no 'quantization'"),
        ({"quantization": "gq"}, "'quantization' is not valid JSON"),
        ({"scheme": "int8-asymmetric"}, "scheme must be 'int8-symmetric'"),
        ({"group_size": 8}, "embed.scale has shape (256, 1), but group_size=8 on a (256, 32) weight needs (256, 4)"),
        ({"group_size": -1}, "group_size must be an integer >= 0"),
        ({"modules": ["blocks.7.attn.qkv"]}, "names 1 module(s) the config's model has no Linear/Embedding for"),
        ({"modules": "embed"}, "modules must be a list"),
        ({"weights": "float32"}, "the tensors do not fit the config"),
    ],
)
def test_wrong_metadata_is_a_clear_error(int8_file, tmp_path, change, message):
    path, _ = int8_file
    if change.keys() & {"scheme", "group_size", "modules"}:
        change = {"quantization": {**quant(path), **change}}
    bad = rewrite_metadata(path, tmp_path / "bad.int8", **change)
    with pytest.raises(CharLMError) as info:
        load_artifact(bad)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_not_an_artefact(tmp_path):
    path = tmp_path / "junk.int8"
    path.write_bytes(b"\x00" * 40)
    with pytest.raises(CharLMError, match="not a charlm artefact"):
        load_artifact(path)
    with pytest.raises(CharLMError, match="no such file"):
        load_artifact(tmp_path / "missing.int8")


def test_int8_linear_keeps_its_bias():
    torch.manual_seed(0)
    linear = nn.Linear(32, 8)
    q, scale = quantize(linear.weight)
    int8 = Int8Linear(32, 8, bias=True, group_size=0)
    int8.load_state_dict({"qweight": q, "scale": scale, "bias": linear.bias.detach()})
    x = torch.randn(3, 32)
    torch.testing.assert_close(int8(x), nn.functional.linear(x, dequantize(q, scale), linear.bias), atol=1e-5, rtol=0)


def int8_linear(in_features, out_features, seed=0):
    torch.manual_seed(seed)
    layer = Int8Linear(in_features, out_features, bias=True, group_size=0)
    q, scale = quantize(torch.randn(out_features, in_features) * 0.05)
    layer.load_state_dict({"qweight": q, "scale": scale, "bias": torch.randn(out_features)})
    return layer


@pytest.mark.parametrize("rows", [1, 3, PACKED_MAX_ROWS])
def test_int8_decode_matmul_reads_int8_with_bfloat16_precision(rows):
    layer = int8_linear(128, 96)
    x = torch.randn(1, rows, 128)
    reference = F.linear(x, layer.weight, layer.bias)  # float32 throughout
    with torch.no_grad():
        y = layer(x)
    assert y.shape == reference.shape and y.dtype == torch.float32
    # the int8 kernel's activations and result are bfloat16 (8 significant bits): close, not equal
    torch.testing.assert_close(y, reference, rtol=2e-2, atol=2e-2)
    assert not torch.equal(y, reference)


def test_int8_prefills_and_odd_widths_stay_float32():
    for layer, x in [(int8_linear(128, 96), torch.randn(2, PACKED_MAX_ROWS, 128)), (int8_linear(40, 24), torch.randn(1, 1, 40))]:
        with torch.no_grad():
            torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)


def test_auto_keeps_int8_resident_for_models_whose_float_matmuls_are_large(int8_file, monkeypatch):
    import charlm.artifact

    path, source = int8_file
    matmul_bytes = 4 * sum(m.weight.numel() for m in source.modules() if isinstance(m, nn.Linear))

    def int8_layers(threshold):
        monkeypatch.setattr(charlm.artifact, "INT8_RESIDENT_MIN_BYTES", threshold)
        model, _ = load_artifact(path)
        return sum(isinstance(m, Int8Linear) for m in model.modules())

    assert int8_layers(matmul_bytes + 1) == 0
    assert int8_layers(matmul_bytes) == sum(isinstance(m, nn.Linear) for m in source.modules()) > 0


def test_int8_resident_decode_steps_follow_the_float_model(tmp_path):
    from charlm.builtin.export_formats import Int8Exporter
    from charlm.builtin.exporters import Int8Options
    from charlm.runners import ModelRunner

    torch.manual_seed(0)
    job = config_from_dict({"seq_len": 32, "max_steps": 1, "model": {"d_model": 64, "n_layer": 2, "n_head": 2, "zero_init_projections": False}})
    Int8Exporter(Int8Options()).export(ByteLM(job.model, max_len=job.seq_len).eval(), job, tmp_path / "m.int8")
    runners = [ModelRunner(*load_artifact(tmp_path / "m.int8", resident=r)) for r in ("int8", "float")]
    prompt, token = torch.randint(0, 256, (2, 12)), torch.randint(0, 256, (2,))
    (resident, _), (expanded, _) = [r.start(prompt) for r in runners]
    torch.testing.assert_close(resident, expanded, atol=1e-4, rtol=1e-4)  # a prefill of 24 rows: float32
    states = [r.start(prompt)[1] for r in runners]
    assert states[0][0][0].k.dtype == torch.float32  # the KV cache is kept in the activations' dtype
    for _ in range(4):  # decode steps: 2 rows, the int8 kernel's bfloat16 activations
        (resident, states[0]), (expanded, states[1]) = [r.step(token, s) for r, s in zip(runners, states)]
        torch.testing.assert_close(resident, expanded, atol=5e-3, rtol=5e-3)
        assert not torch.equal(resident, expanded)
        token = expanded.argmax(-1)
