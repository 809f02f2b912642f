"""Generation: the cache matches the uncached model, windows stay bounded and match a
from-scratch reference, sampling is seeded, and the command handles bytes faithfully."""

import io
import re

import pytest
import torch
from helpers import charlm_main, fit_text

import charlm
from charlm.checkpoint import save_checkpoint
from charlm.config import config_from_dict, to_dict
from charlm.errors import CharLMError, UsageError
from charlm.generate import SINK_BYTES, LanguageModel, StopScanner, Utf8Writer, Window, build_sampler, sample_tokens
from charlm.model import ByteLM
from charlm.runners import ModelRunner

WINDOW = 32  # the trained seq_len, so the default max_context_tokens
TEXT = b"the quick brown fox jumps over the lazy dog. "


def make_job(**model):
    raw = {"data": {"train": "x.bin"}, "max_steps": 1, "seq_len": WINDOW, "device": "cpu"}
    raw["model"] = {"d_model": 32, "n_layer": 2, "n_head": 2, **model}
    return config_from_dict(raw)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny model trained briefly on a repeated sentence, so greedy text is not trivial."""
    torch.manual_seed(0)
    job = make_job()
    model = ByteLM(job.model, job.seq_len)
    fit_text(model, TEXT * 20, steps=40, batch=16, lr=5e-3)  # half-trained: the text depends on its context, yet is no noise
    path = tmp_path_factory.mktemp("gen") / "ck.pt"
    save_checkpoint(path, {"model": model.state_dict(), "config": to_dict(job)})
    return path


@pytest.fixture(scope="module")
def lm(checkpoint):
    return charlm.load(checkpoint)


def reference_greedy(model, prompt: bytes, max_new: int, window: int, sink: int = 0) -> bytes:
    """Re-encode the window from scratch for every byte; when it overflows, drop its oldest
    quarter (keeping the first ``sink`` bytes of the text)."""
    seq = list(prompt) or [0]
    head, recent = seq[:sink], seq[sink:]
    keep = window - window // 4 - sink
    out = []
    for _ in range(max_new):
        if len(head) + len(recent) > window:
            recent = recent[-keep:]
        with torch.no_grad():
            logits, _ = model(torch.tensor([head + recent]))
        token = int(logits[0, -1].argmax())
        out.append(token)
        recent.append(token)
    return bytes(out)


def greedy(lm, prompt, max_new, **kw):
    return lm.generate(prompt, max_new, temperature=0, **kw)


def test_load_gives_model_and_config(lm):
    assert isinstance(lm.runner.model, ByteLM) and not lm.runner.model.training
    assert lm.config.seq_len == WINDOW
    assert isinstance(greedy(lm, "the", 5), str)
    assert isinstance(greedy(lm, b"the", 5), bytes)


def test_greedy_cached_equals_uncached_300_bytes(lm):
    cached = greedy(lm, b"the quick", 300)
    assert len(cached) == 300 and b"the lazy" in cached  # it learned something
    assert cached == greedy(lm, b"the quick", 300, cache=False)


@pytest.mark.parametrize("policy, sink", [("recompute", 0), ("sink", SINK_BYTES)])
def test_four_windows_stay_bounded_and_match_reference(lm, policy, sink, monkeypatch):
    calls = []
    forward = lm.runner.model.forward

    def spy(idx, pos=0, states=None):
        calls.append((pos, idx.size(1), states is not None))
        return forward(idx, pos, states)

    allocated = []
    init_states = lm.runner.model.init_states
    monkeypatch.setattr(lm.runner.model, "forward", spy)
    monkeypatch.setattr(lm.runner.model, "init_states", lambda b, n, d, t: allocated.append(n) or init_states(b, n, d, t))
    out = lm.generate(b"the ", 4 * WINDOW, temperature=0, context_policy=policy)
    monkeypatch.undo()
    assert set(allocated) == {WINDOW}
    assert all(pos + length <= WINDOW for pos, length, stateful in calls if stateful)
    assert sum(length > 1 for _, length, _ in calls) >= 4  # it did re-window
    assert out == reference_greedy(lm.runner.model, b"the ", 4 * WINDOW, WINDOW, sink)


def test_prompt_longer_than_window(lm):
    prompt = TEXT * 3  # 135 bytes, window 32
    assert greedy(lm, prompt, 40) == reference_greedy(lm.runner.model, prompt, 40, WINDOW)
    assert greedy(lm, prompt, 40, context_policy="sink") == reference_greedy(lm.runner.model, prompt, 40, WINDOW, SINK_BYTES)
    with pytest.raises(UsageError, match="do not fit max_context_tokens=32"):
        greedy(lm, prompt, 40, context_policy="error")


def test_error_policy_fits_exactly(lm):
    assert len(greedy(lm, b"the ", WINDOW - 3, context_policy="error")) == WINDOW - 3
    with pytest.raises(UsageError):
        greedy(lm, b"the ", WINDOW - 2, context_policy="error")
    with pytest.raises(CharLMError, match="context full"):
        Window(8, "error").fit(torch.zeros(1, 9, dtype=torch.long))


def test_smaller_window_and_bad_window(lm):
    assert greedy(lm, b"the ", 50, max_context_tokens=12) == reference_greedy(lm.runner.model, b"the ", 50, 12)
    with pytest.raises(UsageError, match="more than this model's blocks hold"):
        greedy(lm, b"a", 5, max_context_tokens=WINDOW + 1)
    with pytest.raises(UsageError, match=">= 2"):
        greedy(lm, b"a", 5, max_context_tokens=1)


def test_empty_prompt_starts_a_document(lm):
    out = greedy(lm, b"", 20)
    assert len(out) == 20 and out == reference_greedy(lm.runner.model, b"", 20, WINDOW)


def test_seed_determinism(lm):
    a = lm.generate("the", 60, seed=7, top_k=20)
    assert a == lm.generate("the", 60, seed=7, top_k=20)
    assert a != lm.generate("the", 60, seed=8, top_k=20)
    batch = lm.generate("the", 30, seed=7, num_samples=3, temperature=1.5)
    assert len(batch) == 3 and all(len(s) <= 30 for s in batch)
    assert batch == lm.generate("the", 30, seed=7, num_samples=3, temperature=1.5)


def test_stop_strings(lm):
    full = greedy(lm, b"the quick", 100)
    first = full.index(b"lazy")
    assert full.index(b"og.") > first
    assert greedy(lm, b"the quick", 100, stop=["lazy"]) == full[:first]
    assert greedy(lm, b"the quick", 100, stop=["zzz", "og.", "lazy"]) == full[:first]  # the earliest wins
    assert greedy(lm, b"the quick", 100, stop=["no such text"]) == full
    chunks = list(lm.stream(b"the quick", 100, temperature=0, stop=["lazy"]))
    assert b"".join(c[0] for c in chunks) == full[:first]
    assert len(chunks) == first + len(b"lazy")  # it stopped at the stop string, not at max_new
    with pytest.raises(UsageError, match="empty"):
        greedy(lm, b"a", 5, stop=[""])


def test_stop_scanner_holds_back_partial_matches():
    scanner = StopScanner([b"ab", b"xyz"])
    released = b"".join(scanner.push(b) for b in b"cxyaab")
    assert scanner.done and released == b"cxya"
    scanner = StopScanner([b"xyz"])
    released = [scanner.push(b) for b in b"axy"]
    assert released == [b"", b"", b"a"] and scanner.flush() == b"xy"


def test_utf8_writer_prints_split_characters_whole():
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8", write_through=True)
    writer = Utf8Writer(stream)
    for chunk in [b"caf", b"\xc3", b"\xa9 \xf0\x9f", b"\x98\x80", b"\xff!", b"\xe2"]:
        writer.write(chunk)
    assert raw.getvalue().decode("utf-8") == "café 😀\ufffd!"
    writer.write(b"", final=True)
    assert raw.getvalue().decode("utf-8").endswith("\ufffd")
    raw_writer = Utf8Writer(stream, raw=True)
    raw_writer.write(b"\xff\xfe")
    assert raw.getvalue().endswith(b"\xff\xfe")


def test_any_block_kind_and_fixed_size_states():
    pytest.importorskip("charlm_ssm")
    torch.manual_seed(0)
    ssm = {"kind": "ssm", "d_state": 8, "chunk_size": 8}
    for layers, window in [([ssm, "transformer"], WINDOW), ([ssm, ssm], None)]:
        job = make_job(layers=layers)
        lm = LanguageModel(ModelRunner(ByteLM(job.model, job.seq_len), job))
        assert lm.window().size == window  # an all-SSM stack is never re-windowed by default
        out = greedy(lm, b"hello", 2 * WINDOW + 5)
        assert out == greedy(lm, b"hello", 2 * WINDOW + 5, cache=False)


@pytest.mark.parametrize("policy, sink", [("recompute", 0), ("sink", SINK_BYTES)])
def test_ngram_state_survives_decoding_and_re_windowing(policy, sink):
    torch.manual_seed(0)
    job = make_job(ngram_buckets=[64, 128])
    model = ByteLM(job.model, job.seq_len).eval()
    with torch.no_grad():
        for table in model.ngram.tables:
            table.weight.normal_(std=1.0)  # loud enough to steer greedy choices
    lm = LanguageModel(ModelRunner(model, job))
    out = greedy(lm, b"the ", 4 * WINDOW, context_policy=policy)
    assert out == greedy(lm, b"the ", 4 * WINDOW, context_policy=policy, cache=False)
    assert out == reference_greedy(model, b"the ", 4 * WINDOW, WINDOW, sink)


def test_sample_tokens_yields_batches(lm):
    tokens = list(sample_tokens(lm.runner, b"ab", 5, build_sampler(), Window(WINDOW), None, num_samples=4))
    assert len(tokens) == 5 and all(t.shape == (4,) for t in tokens)


# ---------------------------------------------------------------- the command


def test_cli_streams_prompt_and_continuation(checkpoint, lm):
    code, out, _ = charlm_main("generate", "--checkpoint", str(checkpoint), "--prompt", "the quick", "--temperature", "0",
                               "--max-new", "40", "--device", "cpu", binary=True)
    assert code == 0
    assert out.decode() == "the quick" + greedy(lm, "the quick", 40) + "\n"
    code, out, _ = charlm_main("generate", "--checkpoint", str(checkpoint), "--prompt", "the", "--temperature", "0",
                               "--max-new", "40", "--stop", "lazy", "--no-echo", "--num-samples", "2", "--device", "cpu", binary=True)
    sample = greedy(lm, "the", 40, stop=["lazy"])
    assert code == 0 and out.decode() == f"--- sample 1 ---\n{sample}\n--- sample 2 ---\n{sample}\n"


def test_cli_timings_go_to_stderr_and_count_the_new_bytes(checkpoint, lm):
    args = ["generate", "--checkpoint", str(checkpoint), "--prompt", "the", "--temperature", "0", "--device", "cpu"]
    code, out, err = charlm_main(*args, "--max-new", "25", "--timings", binary=True)
    assert code == 0 and out.decode() == "the" + greedy(lm, "the", 25) + "\n"  # stdout as without the flag
    line = re.fullmatch(
        r"timings: load [\d.]+ s, 25 new bytes in ([\d.]+) s, the first after ([\d.]+) s"
        r" \(the prompt's prefill\), then ([\d,.]+) bytes/s\n",
        err,
    )
    assert line, err
    total, first, rate = float(line[1]), float(line[2]), float(line[3].replace(",", ""))
    assert first < total and rate == pytest.approx(24 / (total - first), rel=0.02)
    code, _, err = charlm_main(*args, "--max-new", "20", "--num-samples", "3", "--timings", "--no-echo", binary=True)
    assert code == 0 and ", 60 new bytes in " in err
    assert charlm_main(*args, "--max-new", "5", binary=True)[2] == ""


def test_cli_invalid_utf8_prompt_file(checkpoint, tmp_path):
    prompt = tmp_path / "prompt.bin"
    prompt.write_bytes(b"\xff\xfethe ")
    args = ["--checkpoint", str(checkpoint), "--prompt-file", str(prompt), "--max-new", "10", "--seed", "1"]
    code, out, _ = charlm_main("generate", *args, binary=True)
    assert code == 0 and out.decode("utf-8").startswith("\ufffd\ufffdthe ")
    code, raw, _ = charlm_main("generate", *args, "--raw", binary=True)
    assert code == 0 and raw.startswith(b"\xff\xfethe ") and len(raw) == len(b"\xff\xfethe ") + 10
    assert out.decode("utf-8") == raw.decode("utf-8", "replace") + "\n"  # same seed, same bytes


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--prompt-file", "/no/such/prompt"], 2, "--prompt-file: cannot read /no/such/prompt"),
        (["--prompt", "a", "--prompt-file", "f"], 2, "not allowed with argument"),
        (["--top-p", "1.5"], 2, ".p: must be in (0.0, 1.0], got 1.5"),
        (["--top-k", "0"], 2, ".k: must be > 0, got 0"),
        (["--temperature", "-1"], 2, "temperature must be >= 0"),
        (["--num-samples", "0"], 2, "num_samples must be >= 1"),
        (["--max-new", "-1"], 2, "max_new must be >= 0"),
        (["--max-context-tokens", "64"], 2, "more than this model's blocks hold (32)"),
        (["--max-new", "40", "--context-policy", "error"], 2, "do not fit max_context_tokens=32"),
        (["--context-policy", "forget"], 2, "invalid choice"),
        (["--sampler", "top_k:k=0"], 2, "config error: sampler[0].k: must be > 0, got 0"),
        (["--sampler", "top_k:k=3", "--sampler", "nucleus"], 2, 'sampler[1]: unknown sampler "nucleus"'),
        (["--sampler", "top_k:3"], 2, "sampler 'top_k' option '3': expected key=value"),
        (["--sampler", "greedy", "--top-k", "3", "--min-p", "0.1"], 2, "--sampler cannot be combined with --top-k, --min-p"),
    ],
)
def test_cli_bad_inputs_are_one_line(checkpoint, args, code, message):
    if "--prompt" not in args and "--prompt-file" not in args:
        args = ["--prompt", "the", *args]
    got, out, err = charlm_main("generate", "--checkpoint", str(checkpoint), *args, binary=True)
    assert got == code and message in err and err.count("\n") == 1 and out == b""


def test_sampler_chain_in_python(lm):
    assert lm.generate(b"the", 30, sampler=["top_k:k=1"], seed=3) == greedy(lm, b"the", 30)
    chain = ["temperature:value=0.7", {"kind": "top_k", "k": 5}, "top_p:p=0.9"]
    assert lm.generate(b"the", 30, sampler=chain, seed=3) == lm.generate(b"the", 30, temperature=0.7, top_k=5, top_p=0.9, seed=3)
    assert lm.generate(b"the", 30, sampler="greedy") == greedy(lm, b"the", 30)
    for shortcut in ({"temperature": 1.0}, {"top_k": 40}):  # never silently ignored, even the default value
        with pytest.raises(UsageError, match=f"give sampler=.* or {next(iter(shortcut))}, not both"):
            lm.generate(b"the", 5, sampler=["top_p:p=0.9"], **shortcut)


def test_run_directory_means_its_last_checkpoint(checkpoint, lm, tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(checkpoint.read_bytes())
    assert greedy(charlm.load(tmp_path), b"the", 20) == greedy(lm, b"the", 20)
    with pytest.raises(CharLMError, match="neither a run directory .* nor an artefact"):
        charlm.load(tmp_path / "checkpoints")


def test_cli_missing_checkpoint(tmp_path):
    code, _, err = charlm_main("generate", "--checkpoint", str(tmp_path / "nope.pt"), "--prompt", "a", binary=True)
    assert code == 1 and "no such checkpoint" in err
