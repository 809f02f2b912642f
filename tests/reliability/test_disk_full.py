"""A full disk (ENOSPC mid-file, on a real small tmpfs) during checkpoint, prepare and export.

Each ends in one line and exit 1, the previous files intact, nothing partial or temporary left.
"""

import json
import os
import subprocess
import sys

import harness


def charlm(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "charlm", *map(str, argv)], capture_output=True, text=True, timeout=300)


def fill(directory, leave_bytes: int) -> None:
    """Take all of the disk's free space but ``leave_bytes``."""
    stat = os.statvfs(directory)
    free = stat.f_bavail * stat.f_frsize
    (directory / "filler").write_bytes(bytes(max(free - leave_bytes, 0)))


def error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if not line.startswith("prepare:")]  # tqdm's bar
    assert result.returncode == 1 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(corpus, small_disk, tmp_path):
    from charlm.checkpoint import load_checkpoint

    out = small_disk / "run"
    job = harness.write_job(tmp_path / "job.toml", harness.tiny_job(corpus, out, max_steps=2))
    assert charlm("run", job).returncode == 0
    fill(small_disk, 16 * 1024)  # room for log lines, not for a checkpoint
    line = error_line(charlm("run", job, "--resume", "auto", "--max-steps", "4"))
    assert "No space left on device" in line and "checkpoints" in line
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == 2
    assert not [p.name for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]


def test_a_full_disk_during_prepare_keeps_the_previous_splits(small_disk, tmp_path):
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "small.txt").write_bytes(b"a few words " * 100)
    out = small_disk / "data"
    assert charlm("data", "prepare", texts, "--out", out, "--val-fraction", "0").returncode == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for i in range(4):
        (texts / f"big{i}.txt").write_bytes(os.urandom(400_000))
    assert "No space left on device" in error_line(charlm("data", "prepare", texts, "--out", out))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no partial or temporary file
    assert json.loads(before["meta.json"])["train"]["bytes"] == len(before["train.bin"])


def test_a_full_disk_during_export_leaves_no_artefact(checkpoint, small_disk):
    fill(small_disk, 8 * 1024)
    out = small_disk / "exports" / "model.safetensors"
    line = error_line(charlm("export", "--format", "safetensors", "--checkpoint", checkpoint, "--out", out))
    assert "No space left on device" in line
    assert list(out.parent.iterdir()) == []
