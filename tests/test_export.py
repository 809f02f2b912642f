"""charlm export: every format round-trips and validates; gates fail loudly; artefacts load in generate/eval."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import charlm
from charlm import registry as registry_module
from charlm.artifact import artifact_weights, load_artifact, save_artifact
from charlm.checkpoint import load_checkpoint, model_from_checkpoint
from charlm.cli import main
from charlm.data import SplitWriter
from charlm.export import GATES, export, make_exporter, report_path
from charlm.loading import recognising_exporter
from charlm.runners import ModelRunner

TEXT = b"the quick brown fox jumps over the lazy dog. " * 40
FORMATS = ["int8", "safetensors", "torch-export", "torchscript"]


@pytest.fixture(scope="module")
def val_split(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "val.bin"
    with SplitWriter(path) as w:
        for i in range(4):
            w.add([TEXT[i * 50 :]])
        w.commit()
    return path


@pytest.fixture(scope="module")
def source(checkpoint):
    return model_from_checkpoint(load_checkpoint(checkpoint))[0]


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip(fmt, checkpoint, source, val_split, tmp_path):
    out = tmp_path / f"model.{fmt}"
    report = export(fmt, checkpoint, out, data=str(val_split))
    assert report.passed, report.table()
    assert json.loads(report_path(out).read_text())["passed"] is True
    assert not list(tmp_path.glob(".*"))  # no partial file left behind
    runner = make_exporter(fmt).load(out, torch.device("cpu"))
    x = torch.tensor([list(TEXT[3:35]), list(TEXT[60:92])])
    with torch.no_grad():
        want = source(x)[0]
    got = runner.logits(x)
    if fmt == "int8":  # lossy, but the same predictions
        assert (got.argmax(-1) == want.argmax(-1)).float().mean() >= 0.95
        assert report.metrics["size_ratio"] <= 0.30
    else:
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
        assert report.metrics["greedy_agree"] == report.metrics["greedy_bytes"]
    # programs take any length from 2 to the context
    torch.testing.assert_close(runner.logits(x[:1, :5]), want[:1, :5], atol=0.5 if fmt == "int8" else 1e-5, rtol=0)


def test_bf16_safetensors_is_gated_as_lossy(checkpoint, tmp_path):
    report = export("safetensors", checkpoint, tmp_path / "m.safetensors", {"dtype": "bf16"})
    assert not report.exact and set(report.gates) == {"bpb_delta", "kl", "top1"}
    assert report.passed, report.table()
    assert report.metrics["size_ratio"] < 0.55


def test_programs_load_without_charlm(checkpoint, tmp_path):
    for fmt, suffix in [("torch-export", "pt2"), ("torchscript", "ts")]:
        export(fmt, checkpoint, tmp_path / f"m.{suffix}", validate_after=False)
    code = (
        "import sys; sys.modules['charlm'] = None\n"  # any import of charlm would now fail
        "import torch\n"
        f"x = torch.tensor([[1, 2, 3, 4]])\n"
        f"a = torch.export.load({str(tmp_path / 'm.pt2')!r}).module()(x)\n"
        f"b = torch.jit.load({str(tmp_path / 'm.ts')!r})(x)\n"
        "print(tuple(a.shape), float((a - b).abs().max()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[:3] == ["(1,", "4,", "256)"] and float(out[3]) < 1e-5


def test_cli_export_and_exit_codes(checkpoint, tmp_path, capsys):
    assert main(["export", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(fmt in listed for fmt in FORMATS)
    out = tmp_path / "m.int8"
    assert main(["export", "--format", "int8", "--checkpoint", str(checkpoint), "--out", str(out), "group_size=16"]) == 0
    printed = capsys.readouterr().out
    assert "validation passed" in printed and "top-1 agreement" in printed and "decode bytes/s" in printed
    assert json.loads(report_path(out).read_text())["gates"]["kl"]["passed"]
    # a gate made impossible fails with exit 1
    args = ["export", "--format", "int8", "--checkpoint", str(checkpoint), "--out", str(out)]
    assert main(args + ["--tolerance", "top1=1.01"]) == 1
    assert "validation FAILED" in capsys.readouterr().out
    assert main(args + ["--tolerance", "nope=1"]) == 2
    assert main(args + ["group_size=7"]) == 2
    assert "group_size 7 does not divide" in capsys.readouterr().err
    assert main(["export", "--format", "onnx-nope", "--checkpoint", str(checkpoint), "--out", str(out)]) == 2
    assert main(["export", "--format", "int8"]) == 2
    assert main(["export", "--format", "int8", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(out)]) == 1


def test_generate_and_eval_load_artefacts(checkpoint, val_split, tmp_path, capsys):
    prompt = ["--prompt", "the quick", "--max-new", "24", "--temperature", "0"]
    assert main(["generate", "--checkpoint", str(checkpoint), *prompt]) == 0
    expected = capsys.readouterr().out
    for fmt in FORMATS:
        out = tmp_path / f"{fmt}.bin-like"  # recognised by content, not by name
        export(fmt, checkpoint, out, validate_after=False)
        assert recognising_exporter(out)[0] == fmt
        assert main(["generate", "--checkpoint", str(out), *prompt]) == 0
        assert capsys.readouterr().out == expected
        assert main(["eval", "--checkpoint", str(out), "--data", str(val_split), "--json", "--no-baselines"]) == 0
        assert json.loads(capsys.readouterr().out)["bpb"] < 4
    assert recognising_exporter(checkpoint) is None
    assert artifact_weights(tmp_path / "int8.bin-like") == "int8" and artifact_weights(checkpoint) is None
    assert charlm.load(out).generate(b"the quick", 24, temperature=0) == expected.encode()[9:-1]


# ---------------------------------------------------------------- a broken exporter fails validation


class OffByOneExporter:
    """Writes a float artefact whose embedding is shifted by one byte: loads fine, predicts wrong."""

    suffix = ".safetensors"
    exact = True

    def export(self, model, job, path):
        state = dict(model.state_dict())
        state["embed.weight"] = state["embed.weight"].roll(1, dims=0)
        save_artifact(path, state, job, "float32")

    def load(self, path, device):
        return ModelRunner(*load_artifact(path, device))


def test_broken_exporter_fails_validation(checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(registry_module.BUILTIN_MODULES, "broken-test-plugin", __name__)
    monkeypatch.setattr(registry_module, "_default", None)
    out = tmp_path / "broken.safetensors"
    assert main(["export", "--format", "off-by-one", "--checkpoint", str(checkpoint), "--out", str(out)]) == 1
    assert "gate FAIL max_logit_diff" in capsys.readouterr().out
    report = json.loads(report_path(out).read_text())
    assert report["passed"] is False and report["metrics"]["max_logit_diff"] > GATES["max_logit_diff"][0]


class NotARunnerExporter(OffByOneExporter):
    def recognise(self, path):
        return path.suffix == ".odd"

    def load(self, path, device):
        return object()


@charlm.hookimpl
def register_exporters(register):
    register("off-by-one", lambda options: OffByOneExporter(), help="a deliberately broken exporter (tests)")
    register("not-a-runner", lambda options: NotARunnerExporter(), help="load() returns no Runner (tests)")


def test_an_artefact_that_loads_as_no_runner_is_one_line(checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(registry_module.BUILTIN_MODULES, "broken-test-plugin", __name__)
    monkeypatch.setattr(registry_module, "_default", None)
    odd = tmp_path / "model.odd"
    odd.write_bytes(b"anything")
    assert main(["generate", "--checkpoint", str(odd), "--prompt", "a"]) == 2
    err = capsys.readouterr().err
    assert "exporter 'not-a-runner': load() returned a object, not a Runner" in err and err.count("\n") == 1


def test_validation_sample_is_fixed(checkpoint, val_split, tmp_path):
    a = export("safetensors", checkpoint, tmp_path / "a", data=str(val_split))
    b = export("safetensors", checkpoint, tmp_path / "b", data=str(val_split))
    assert a.metrics["bpb_source"] == b.metrics["bpb_source"] < 4 < export("safetensors", checkpoint, tmp_path / "c").metrics["bpb_source"]
    assert np.isfinite(a.metrics["decode_export"])
