"""SIGINT/SIGTERM and interrupted writes: a documented exit code, one line, nothing partial left behind.

Each case runs ``charlm`` in a real subprocess that sends itself the signal at a chosen
point (``os.kill`` from a wrapped function), so the signal lands exactly there every time.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}

# charlm in a subprocess, with `target` (module:Class.method or module:function) wrapped to send
# the signal `when` ("before" or "after") its call number `nth`
SIGNALLED = textwrap.dedent("""
    import importlib, os, signal, sys
    from charlm.cli import main
    target, when, nth, sig = sys.argv[1:5]
    module, _, name = target.partition(":")
    owner = importlib.import_module(module)
    *parents, attr = name.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    original, calls = getattr(owner, attr), [0]
    def wrapped(*args, **kwargs):
        calls[0] += 1
        hit = calls[0] == int(nth)
        if hit and when == "before":
            os.kill(os.getpid(), getattr(signal, sig))
        result = original(*args, **kwargs)
        if hit and when == "after":
            os.kill(os.getpid(), getattr(signal, sig))
        return result
    setattr(owner, attr, wrapped)
    sys.exit(main(sys.argv[5:]))
""")


def charlm_signalled(target: str, when: str, nth: int, sig: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", SIGNALLED, target, when, str(nth), sig, *argv], capture_output=True, text=True, timeout=180
    )


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if not line.startswith("prepare:")]  # tqdm's bar
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def hidden_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob(".*"))


@pytest.fixture
def texts(tmp_path) -> Path:
    src = tmp_path / "texts"
    src.mkdir()
    for i in range(8):
        (src / f"doc{i}.txt").write_bytes(b"some words of document %d " % i * 50)
    return src


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_during_prepare_leaves_nothing_and_exits_128_plus_its_number(texts, tmp_path, sig):
    out = tmp_path / "data"
    result = charlm_signalled("charlm.data:SplitWriter.add", "after", 5, sig, "data", "prepare", str(texts), "--out", str(out))
    assert result.returncode == EXIT_CODES[sig], result.stderr
    assert one_line(result.stderr) == f"interrupted by {sig}"
    assert sorted(p.name for p in out.iterdir()) == []  # no split, no meta.json, no temporary file


def test_a_signal_while_prepare_renames_waits_until_every_file_is_in_place(texts, tmp_path):
    out = tmp_path / "data"
    result = charlm_signalled("charlm.data:SplitWriter.publish", "before", 1, "SIGTERM", "data", "prepare", str(texts), "--out", str(out))
    assert result.returncode == 143, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "train.bin", "train.idx", "val.bin", "val.idx"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["train"]["bytes"] == (out / "train.bin").stat().st_size


@pytest.mark.parametrize("when", ["export", "validation"])
def test_a_sigterm_during_export_leaves_no_artefact_and_no_partial_file(checkpoint, tmp_path, when):
    out = tmp_path / "artefacts" / "model.safetensors"
    target = "charlm.builtin.export_formats:save_artifact" if when == "export" else "charlm.export:validate"
    argv = ["export", "--format", "safetensors", "--checkpoint", str(checkpoint), "--out", str(out)]
    result = charlm_signalled(target, "after" if when == "export" else "before", 1, "SIGTERM", *argv)
    assert result.returncode == 143, result.stderr
    assert one_line(result.stderr) == "interrupted by SIGTERM"
    assert list(out.parent.iterdir()) == []  # neither the artefact, a report, nor a partial file


def test_a_finished_export_has_its_report(checkpoint, tmp_path):
    out = tmp_path / "model.safetensors"
    result = subprocess.run(
        [sys.executable, "-m", "charlm", "export", "--format", "safetensors", "--checkpoint", str(checkpoint), "--out", str(out)],
        capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "model.safetensors.report.json"]
    assert json.loads((tmp_path / "model.safetensors.report.json").read_text())["artifact"] == str(out)


def test_prepare_and_export_remove_the_temporary_files_a_killed_write_left(texts, checkpoint, tmp_path):
    data, exports = tmp_path / "data", tmp_path / "exports"
    data.mkdir()
    exports.mkdir()
    stale = [data / ".train.bin.abcd1234.tmp", data / ".meta.json.x_9y8z7w.tmp", exports / ".model.safetensors.report.json.qwertyui.tmp"]
    foreign = [data / ".notes.txt.abcd1234.tmp", exports / ".other.bin.abcd1234.tmp"]  # not ours to delete
    for path in stale + foreign:
        path.write_bytes(b"half")
    assert subprocess.run([sys.executable, "-m", "charlm", "data", "prepare", str(texts), "--out", str(data)], capture_output=True).returncode == 0
    argv = ["export", "--format", "safetensors", "--checkpoint", str(checkpoint), "--out", str(exports / "model.safetensors")]
    assert subprocess.run([sys.executable, "-m", "charlm", *argv], capture_output=True).returncode == 0
    assert [p for p in stale if p.exists()] == []
    assert [p for p in foreign if not p.exists()] == []


def test_remove_stale_temps_matches_only_temp_beside_names(tmp_path):
    from charlm.atomic import remove_stale_temps, temp_beside

    with temp_beside(tmp_path / "last.pt") as tmp:
        tmp.write(b"x")
    kept = [tmp_path / "last.pt.tmp", tmp_path / ".hidden", tmp_path / ".a.toolong123.tmp"]
    for path in kept:
        path.write_bytes(b"")
    assert remove_stale_temps(tmp_path) == [Path(tmp.name)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in kept)


def test_signals_deferred_delivers_the_held_signal_on_leaving():
    from charlm.atomic import signals_deferred
    from charlm.errors import Interrupted, raise_interrupted

    previous = signal.signal(signal.SIGTERM, raise_interrupted)
    try:
        done = []
        with pytest.raises(Interrupted):
            with signals_deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                done.append("body finished")
        assert done == ["body finished"]
    finally:
        signal.signal(signal.SIGTERM, previous)
