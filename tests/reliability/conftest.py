"""Fixtures of the reliability tests: a real prepared corpus and a real tiny checkpoint, built once."""

from pathlib import Path

import pytest
from harness import prepare_corpus, tiny_checkpoint


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    return prepare_corpus(tmp_path_factory.mktemp("reliability-corpus"))


@pytest.fixture(scope="session")
def checkpoint(corpus, tmp_path_factory) -> Path:
    return tiny_checkpoint(corpus, tmp_path_factory.mktemp("reliability-run") / "run")


@pytest.fixture(scope="session")
def paths(corpus, checkpoint, tmp_path_factory) -> dict[str, str]:
    """Files the command-line fuzzer picks from: good ones, a missing one, a directory."""
    scratch = tmp_path_factory.mktemp("reliability-scratch")
    return {
        "checkpoint": str(checkpoint),
        "data": str(corpus / "val.bin"),
        "idx": str(corpus / "val.idx"),
        "missing": str(scratch / "missing"),
        "dir": str(scratch),
        "out": str(scratch / "out.bin"),
        "job": str(checkpoint.parents[1] / "config.toml"),
        "run": str(checkpoint.parents[1]),
    }


@pytest.fixture(autouse=True)
def in_scratch_dir(tmp_path, monkeypatch):
    """Cases run in a scratch directory: a command's default output (plot's curve.png) lands there."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def small_disk(tmp_path):
    """A directory on a real 1 MiB tmpfs (a full disk, for real), or a skip where mounting is not allowed."""
    import shutil
    import subprocess

    mount = tmp_path / "small-disk"
    mount.mkdir()
    if shutil.which("mount") is None or subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True
    ).returncode != 0:
        pytest.skip("mounting a tmpfs is not permitted here")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)
