"""Bits per byte: sliding windows score each byte once, and agree with a per-position reference."""

import json
import math

import numpy as np
import pytest
import torch
from helpers import model_job

from charlm.checkpoint import save_checkpoint
from charlm.cli import main
from charlm.config import to_dict
from charlm.data import SplitWriter
from charlm.errors import CharLMError, UsageError
from charlm.evaluate import compressor_bpb, evaluate_bpb, window_plan
from charlm.model import ByteLM

SEQ_LEN = 16


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    job = model_job(SEQ_LEN)
    return ByteLM(job.model, job.seq_len).eval()


def data(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, n).astype(np.uint8)


def reference_bpb(model, tokens, seq_len, stride):
    """Each byte t scored alone, from the bytes the documented window rule gives it:
    windows end at min(seq_len + k * stride, n - 1), and t belongs to the first that reaches it."""
    n = len(tokens)
    length = min(seq_len, n - 1)
    total = 0.0
    for t in range(1, n):
        k = max(0, math.ceil((t - length) / stride))
        end = min(length + k * stride, n - 1)
        start = end - length
        context = torch.tensor(tokens[start:t], dtype=torch.long)[None]
        with torch.no_grad():
            logits, _ = model(context)
        total -= torch.log_softmax(logits[0, -1].double(), -1)[int(tokens[t])].item()
    return total / (n - 1) / math.log(2)


@pytest.mark.parametrize(
    "n, stride",
    [(10, None), (SEQ_LEN + 1, None), (SEQ_LEN + 2, None), (75, None), (75, 5), (75, SEQ_LEN), (40, 1)],
    ids=["shorter-than-context", "one-window", "one-window-plus-one", "many", "stride-5", "no-overlap", "stride-1"],
)
def test_matches_per_position_reference(model, n, stride):
    tokens = data(n)
    result = evaluate_bpb(model, tokens, SEQ_LEN, stride=stride, batch_size=3)
    expected = reference_bpb(model, tokens, SEQ_LEN, stride or SEQ_LEN // 2)
    assert result.bytes_scored == n - 1
    assert result.bpb == pytest.approx(expected, rel=1e-5)
    assert result.nats_per_byte == pytest.approx(result.bpb * math.log(2))


@pytest.mark.parametrize("n", [2, 3, 17, 18, 50, 101])
@pytest.mark.parametrize("seq_len, stride", [(16, 8), (16, 5), (16, 16), (16, 1), (7, 3)])
def test_plan_scores_every_byte_once_with_enough_context(n, seq_len, stride):
    length = min(seq_len, n - 1)
    scored = []
    for i, (start, first) in enumerate(window_plan(n, seq_len, stride)):
        assert 0 <= start and start + length <= n - 1
        targets = [start + 1 + j for j in range(first, length)]
        if i > 0:  # after the first window, at least seq_len - stride bytes of context
            assert min(t - start for t in targets) >= seq_len - stride
        scored += targets
    assert scored == list(range(1, n))


def test_batch_size_and_max_bytes(model):
    tokens = data(90)
    a = evaluate_bpb(model, tokens, SEQ_LEN, batch_size=1)
    b = evaluate_bpb(model, tokens, SEQ_LEN, batch_size=64)
    assert a.bpb == pytest.approx(b.bpb, rel=1e-6)
    c = evaluate_bpb(model, tokens, SEQ_LEN, max_bytes=40)
    assert c.bytes_scored == 39
    assert c.bpb == pytest.approx(evaluate_bpb(model, tokens[:40], SEQ_LEN).bpb, rel=1e-6)


def test_accepts_bytes_and_restores_training_mode(model):
    model.train()
    try:
        result = evaluate_bpb(model, bytes(data(30)), SEQ_LEN)
        assert model.training
    finally:
        model.eval()
    assert result.bpb == pytest.approx(evaluate_bpb(model, data(30), SEQ_LEN).bpb, rel=1e-6)


def test_bad_inputs(model):
    with pytest.raises(CharLMError, match="need at least 2"):
        evaluate_bpb(model, b"a", SEQ_LEN)
    with pytest.raises(UsageError, match="stride"):
        evaluate_bpb(model, data(30), SEQ_LEN, stride=SEQ_LEN + 1)
    with pytest.raises(UsageError, match="stride"):
        evaluate_bpb(model, data(30), SEQ_LEN, stride=0)


def test_any_block_kind():
    pytest.importorskip("charlm_ssm")
    torch.manual_seed(0)
    job = model_job(SEQ_LEN, layers=[{"kind": "ssm", "d_state": 8, "chunk_size": 8}, "transformer"])
    hybrid = ByteLM(job.model, job.seq_len).eval()
    tokens = data(45)
    result = evaluate_bpb(hybrid, tokens, SEQ_LEN, stride=6)
    assert result.bpb == pytest.approx(reference_bpb(hybrid, tokens, SEQ_LEN, 6), rel=1e-4)


def test_compressor_baselines():
    repetitive = compressor_bpb(b"abcd" * 2000)
    noise = compressor_bpb(data(8000).tobytes())
    assert set(repetitive) == {"zlib", "bz2", "lzma"}
    assert all(v < 0.5 for v in repetitive.values())
    assert all(v > 7.9 for v in noise.values())


# ---------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def files(tmp_path_factory, model):
    root = tmp_path_factory.mktemp("eval")
    save_checkpoint(root / "ck.pt", {"model": model.state_dict(), "config": to_dict(model_job(SEQ_LEN))})
    for name, docs in {"val": [data(120).tobytes()], "one": [b""]}.items():
        with SplitWriter(root / f"{name}.bin") as w:
            for doc in docs:
                w.add([doc])
            w.commit()
    return root


def test_cli_text_and_json(files, model, capsys):
    assert main(["eval", "--checkpoint", str(files / "ck.pt"), "--data", str(files / "val.bin"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "bits/byte" in out and "zlib" in out and "lzma" in out and "bytes scored 120" in out
    argv = ["eval", "--checkpoint", str(files / "ck.pt"), "--data", str(files / "val.bin"), "--device", "cpu"]
    assert main(argv + ["--json", "--stride", "4", "--max-bytes", "60"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["bytes_scored"] == 59 and report["stride"] == 4
    expected = evaluate_bpb(model, np.fromfile(files / "val.bin", dtype=np.uint8)[:60], SEQ_LEN, stride=4)
    assert report["bpb"] == pytest.approx(expected.bpb, rel=1e-6)
    assert set(report["baselines_bpb"]) == {"zlib", "bz2", "lzma"}


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--data", "one.bin"], 1, "need at least 2"),
        (["--data", "missing.bin"], 1, "no such file"),
        (["--data", "val.bin", "--stride", "0"], 2, "--stride must be in [1, 16]"),
        (["--data", "val.bin", "--max-bytes", "1"], 2, "--max-bytes must be >= 2"),
        (["--data", "val.bin", "--batch-size", "0"], 2, "--batch-size must be >= 1"),
        (["--data", "val.bin", "--stride", "x"], 2, "invalid int value"),
    ],
)
def test_cli_errors_are_one_line(files, capsys, args, code, message):
    args = [str(files / a) if a.endswith(".bin") else a for a in args]
    assert main(["eval", "--checkpoint", str(files / "ck.pt"), "--device", "cpu", *args]) == code
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_cli_missing_checkpoint_and_plugin(files, capsys, monkeypatch):
    val = str(files / "val.bin")
    assert main(["eval", "--checkpoint", str(files / "nope.pt"), "--data", val]) == 1
    assert "no such checkpoint" in capsys.readouterr().err
    config = to_dict(model_job(SEQ_LEN))
    config["model"]["block"] = {"kind": "ssm"}
    save_checkpoint(files / "ssm.pt", {"model": {}, "config": config})
    monkeypatch.setenv("CHARLM_DISABLE_PLUGINS", "ssm")
    assert main(["eval", "--checkpoint", str(files / "ssm.pt"), "--data", val]) == 2
    err = capsys.readouterr().err
    assert 'unknown block "ssm"' in err and "charlm-ssm" in err and err.count("\n") == 1
