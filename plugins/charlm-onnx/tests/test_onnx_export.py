"""The onnx exporter: full forward with dynamic length, decode-step graph with explicit state, onnxruntime validation."""

import json

import pytest
import torch

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'charlm-onnx[test]')")

from charlm.checkpoint import save_checkpoint  # noqa: E402
from charlm.cli import main  # noqa: E402
from charlm.config import config_from_dict, to_dict  # noqa: E402
from charlm.export import export, make_exporter, report_path  # noqa: E402
from charlm.model import ByteLM  # noqa: E402
from charlm.registry import get_registry  # noqa: E402


def random_checkpoint(path, **model):
    """A random model with a tied head and non-zero projections, so its logits are far from uniform."""
    torch.manual_seed(0)
    job = config_from_dict({"seq_len": 16, "max_steps": 1, "model": {
        "d_model": 32, "n_layer": 2, "n_head": 2, "zero_init_projections": False, "init_std": 0.2, **model}})
    model = ByteLM(job.model, max_len=job.seq_len)
    if model.ngram is not None:
        with torch.no_grad():
            for table in model.ngram.tables:  # zero-initialised: make the n-grams count
                table.weight.normal_(std=0.2)
    save_checkpoint(path, {"model": model.state_dict(), "config": to_dict(job)})
    return path, model.eval()


def test_onnx_is_a_registered_exporter():
    comp = get_registry().get("exporter", "onnx")
    assert comp.plugin == "onnx"
    assert any(p.distribution == "charlm-onnx" and p.status == "ok" for p in get_registry().plugins)


def test_onnx_transformer_forward_graph(tmp_path, capsys):
    checkpoint, source = random_checkpoint(tmp_path / "t.pt")
    out = tmp_path / "t.onnx"
    assert main(["export", "--format", "onnx", "--checkpoint", str(checkpoint), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "validation passed" in captured.out and "KVCache" in captured.err  # what was left out, and why
    meta = json.loads((out / "charlm.json").read_text())
    assert "KVCache" in meta["decode_step_skipped"] and not (out / "decode_step.onnx").exists()
    assert json.loads(report_path(out).read_text())["metrics"]["greedy_agree"] == 256
    runner = make_exporter("onnx").load(out, torch.device("cpu"))
    for length in (2, 9, 16):  # dynamic length and batch
        x = torch.randint(0, 256, (3, length))
        with torch.no_grad():
            torch.testing.assert_close(runner.logits(x), source(x)[0], atol=1e-4, rtol=0)
    # exporting again replaces the directory
    assert main(["export", "--format", "onnx", "--checkpoint", str(checkpoint), "--out", str(out), "--no-validate"]) == 0


@pytest.mark.parametrize("ngram_buckets, ngram_states", [([], 0), ([64, 32], 1)])
def test_onnx_decode_step_graph_carries_the_ssm_state(tmp_path, ngram_buckets, ngram_states):
    pytest.importorskip("charlm_ssm", reason="charlm-ssm is not installed (its blocks have tensor states)")
    checkpoint, source = random_checkpoint(tmp_path / "s.pt", layers=["ssm", "ssm"], ngram_buckets=ngram_buckets)
    out = tmp_path / "s.onnx"
    report = export("onnx", checkpoint, out)
    assert report.passed, report.table()
    assert report.metrics["greedy_agree"] == 256
    runner = make_exporter("onnx").load(out, torch.device("cpu"))
    assert runner.decode is not None
    names = [i.name for i in runner.decode.get_inputs()]
    # conv tail + SSM state per layer, then the last bytes the n-gram embeddings read
    assert names[:2] == ["token", "pos"] and len(names) == 2 + 4 + ngram_states
    x = torch.randint(0, 256, (1, 12))
    with torch.no_grad():
        want = source(x)[0][0]
    logits, state = runner.start(x[:, :6])
    torch.testing.assert_close(logits[0], want[5], atol=1e-4, rtol=0)
    for t in range(6, 12):
        logits, state = runner.step(x[:, t], state)
        torch.testing.assert_close(logits[0], want[t], atol=1e-4, rtol=0)
