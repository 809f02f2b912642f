"""Adaptive evaluation: strictly causal, and it learns what it has read."""

import json
import math

import numpy as np
import pytest
import torch
from helpers import model_job

from charlm.adapt import AdaptOptions, adapt_options, parse_key_values, read_costs, segment_lengths
from charlm.checkpoint import save_checkpoint
from charlm.cli import main
from charlm.config import to_dict
from charlm.data import SplitWriter
from charlm.errors import UsageError
from charlm.model import ByteLM

SEQ_LEN = 32
WINDOW = 16


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    job = model_job(SEQ_LEN, ngram_buckets=[64, 64])
    return ByteLM(job.model, job.seq_len).eval()


def text_with_secret(seed=0):
    """A random secret as the first chunk, then filler and the secret again, twice."""
    rng = np.random.default_rng(seed)
    secret = rng.integers(0, 256, WINDOW).astype(np.uint8)
    filler = np.frombuffer(b"the quick brown fox jumps over the lazy dog. " * 3, np.uint8)
    return np.concatenate([secret, filler, secret, filler, secret]), len(secret) + len(filler)


def save_model(tmp_path, model) -> str:
    """``model`` saved as the checkpoint ``tmp_path/ck.pt``; returns its path."""
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"model": model.state_dict(), "config": to_dict(model_job(SEQ_LEN, ngram_buckets=[64, 64]))})
    return str(path)


def eval_argv(tmp_path, model) -> list[str]:
    """`charlm eval` of ``model`` (saved as a checkpoint) on a split of ``text_with_secret()``."""
    checkpoint = save_model(tmp_path, model)
    tokens, _ = text_with_secret()
    with SplitWriter(tmp_path / "val.bin") as writer:
        writer.add([tokens.tobytes()])
        writer.commit()
    return ["eval", "--checkpoint", checkpoint, "--data", str(tmp_path / "val.bin"), "--device", "cpu"]


def test_first_occurrence_costs_what_static_costs_later_ones_less(model):
    tokens, gap = text_with_secret()
    options = AdaptOptions(lr=3e-3, steps=3, window=WINDOW)
    static = read_costs(model, tokens, SEQ_LEN, options, adapt=False, segments=1)
    adaptive = read_costs(model, tokens, SEQ_LEN, options, adapt=True, segments=1)
    np.testing.assert_allclose(adaptive[:WINDOW], static[:WINDOW], rtol=0, atol=1e-5)
    first = adaptive[:WINDOW].sum()
    second, third = (adaptive[start : start + WINDOW].sum() for start in (gap, 2 * gap))
    assert third < second < 0.95 * first  # an untrained model: random bytes are learned slowly
    assert third < 0.75 * first and third < 0.75 * static[2 * gap : 2 * gap + WINDOW].sum()


def test_no_byte_is_scored_by_weights_that_saw_it(model):
    """Changing bytes from position p on changes no cost before p (any p, chunk edges too)."""
    tokens, _ = text_with_secret(seed=1)
    options = AdaptOptions(lr=3e-2, window=WINDOW)
    costs = read_costs(model, tokens, SEQ_LEN, options, adapt=True, segments=1)
    for p in (WINDOW - 1, WINDOW, WINDOW + 5, 3 * WINDOW, len(tokens) - 1):
        changed = tokens.copy()
        changed[p:] = 255 - changed[p:]
        other = read_costs(model, changed, SEQ_LEN, options, adapt=True, segments=1)
        np.testing.assert_array_equal(other[:p], costs[:p])
        assert other[p] != costs[p]


def test_reading_restores_the_weights(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tokens, _ = text_with_secret()
    read_costs(model, tokens, SEQ_LEN, AdaptOptions(lr=1e-1, window=WINDOW), adapt=True, segments=3)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_static_reading_matches_a_per_byte_reference(model):
    """Every byte (the first from START_BYTE) is predicted from its own row's bytes, at most
    SEQ_LEN - 1 of them; rows are contiguous parts of the text."""
    tokens = np.random.default_rng(2).integers(0, 256, 70).astype(np.uint8)
    costs = read_costs(model, tokens, SEQ_LEN, AdaptOptions(window=WINDOW), adapt=False, segments=2)
    row_start = 0
    for length in segment_lengths(len(tokens), 2):
        row = np.concatenate([[0], tokens[row_start : row_start + length]])
        for t in range(1, len(row)):
            k = (t - 1) // WINDOW
            ctx_start = max(0, 1 + k * WINDOW - (SEQ_LEN - WINDOW + 1))
            context = torch.tensor(row[ctx_start:t], dtype=torch.long)[None]
            with torch.no_grad():
                logits, _ = model(context)
            expected = -torch.log_softmax(logits[0, -1].double(), -1)[int(row[t])].item()
            assert math.isclose(costs[row_start + t - 1], expected, abs_tol=1e-4)
        row_start += length


def test_options_parse_and_refuse():
    options = adapt_options(parse_key_values(["lr=1e-3,steps=2", "optimizer=sgd", "params=ngram+norm"]))
    assert options == AdaptOptions(lr=1e-3, steps=2, optimizer="sgd", params="ngram+norm")
    for bad in (["lr"], ["speed=3"], ["steps=0"], ["lr=fast"], ["optimizer=lbfgs"], ["window=0"]):
        with pytest.raises(UsageError):
            adapt_options(parse_key_values(bad))


def test_eval_cli_reports_adaptive_next_to_static(tmp_path, model, capsys):
    argv = eval_argv(tmp_path, model)
    assert main([*argv, "--no-baselines", "--adapt", f"lr=3e-2,window={WINDOW}"]) == 0
    out = capsys.readouterr().out
    assert "adaptive" in out and "static, read the same way" in out
    assert main([*argv, "--adapt", f"params=nothing_matches,window={WINDOW}"]) == 2
    err = capsys.readouterr().err
    assert "match no parameter" in err and err.count("\n") == 1
    assert main([*argv, "--adapt", "window=999"]) == 2
    assert "window must be in" in capsys.readouterr().err


def test_eval_cli_reset_doc_reads_each_document_from_the_checkpoint(tmp_path, model, capsys):
    """Two copies of one document: read on, the second copy is cheap; reset=doc reads each
    from the checkpoint's weights, so the split costs what one copy alone costs."""
    checkpoint = save_model(tmp_path, model)
    tokens, _ = text_with_secret()
    for name, copies in (("one", 1), ("two", 2)):
        with SplitWriter(tmp_path / f"{name}.bin") as writer:
            for _ in range(copies):
                writer.add([tokens.tobytes()])
            writer.commit()
    figures = {}
    for name, reset in (("one", "none"), ("two", "none"), ("two", "doc")):
        argv = ["eval", "--checkpoint", checkpoint, "--data", str(tmp_path / f"{name}.bin"), "--device", "cpu"]
        assert main([*argv, "--no-baselines", "--json", "--adapt", f"lr=3e-2,window={WINDOW},segments=1,reset={reset}"]) == 0
        figures[name, reset] = json.loads(capsys.readouterr().out)["adaptive"]
    assert figures["two", "doc"]["documents"] == 2 and figures["two", "none"]["documents"] == 1
    assert figures["two", "doc"]["adaptive_bpb"] == pytest.approx(figures["one", "none"]["adaptive_bpb"], rel=1e-9)
    assert figures["two", "none"]["adaptive_bpb"] < figures["two", "doc"]["adaptive_bpb"] - 0.1
    assert main([*argv, "--adapt", "reset=page"]) == 2
    assert "reset must be none or doc" in capsys.readouterr().err
