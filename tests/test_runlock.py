"""One run per directory: two real `charlm run` processes on one out_dir never both train."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tomli_w import dumps as dumps_toml

from charlm.runlock import RunLocked, run_lock


def job_file(corpus: Path, tmp_path: Path, max_steps: int) -> Path:
    job = {
        "out_dir": str(tmp_path / "run"),
        "seq_len": 16,
        "micro_batch_size": 4,
        "max_steps": max_steps,
        "device": "cpu",
        "model": {"d_model": 16, "n_layer": 1, "n_head": 2, "n_kv_head": 1},
        "data": {"train": str(corpus / "train.bin")},
        "checkpoint": {"every": 5},
        "logging": {"log_every": 1, "eval_every": 0, "final_eval": False},
    }
    path = tmp_path / "job.toml"
    path.write_text(dumps_toml(job))
    return path


def charlm_run(job: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "charlm", "run", str(job), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_holder(out_dir: Path, proc: subprocess.Popen, timeout: float = 120) -> dict:
    """The lock file's contents once ``proc`` holds the lock and has started training."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            info = json.loads((out_dir / "run.lock").read_text())
            if info["pid"] == proc.pid and (out_dir / "metrics.jsonl").stat().st_size > 0:
                return info
        except (OSError, ValueError, KeyError):
            pass
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("the first run never took the lock")


def logged_steps(out_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("resume", [[], ["--resume", "auto"]], ids=["fresh", "resume"])
def test_a_second_run_on_a_held_directory_exits_1_naming_the_holder(corpus, tmp_path, resume):
    job = job_file(corpus, tmp_path, max_steps=100_000)
    out = tmp_path / "run"
    first = charlm_run(job, *resume)
    try:
        holder = wait_for_holder(out, first)
        second = charlm_run(job, *resume)
        _, err = second.communicate(timeout=120)
        assert second.returncode == 1
        assert err.strip() == err.strip().splitlines()[0]
        assert f"pid {first.pid} on {socket.gethostname()}" in err and str(out) in err
        assert holder["host"] == socket.gethostname()
    finally:
        first.send_signal(signal.SIGTERM)  # stops after a checkpoint, exit 0
        first.communicate(timeout=120)
    assert first.returncode == 0
    steps = logged_steps(out)
    assert steps == list(range(1, len(steps) + 1))  # one series: the second process wrote nothing


def test_a_sigkilled_holder_does_not_block_the_next_run(corpus, tmp_path):
    job = job_file(corpus, tmp_path, max_steps=100_000)
    out = tmp_path / "run"
    first = charlm_run(job)
    wait_for_holder(out, first)
    first.kill()
    first.communicate()
    second = charlm_run(job, "--resume", "auto", "--max-steps", "3")
    _, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    assert json.loads((out / "run.lock").read_text())["pid"] == second.pid


def test_the_lock_is_exclusive_and_released_on_exit(tmp_path):
    with run_lock(tmp_path / "run") as lock_file:
        assert json.loads(lock_file.read_text())["pid"] == os.getpid()
        with pytest.raises(RunLocked, match=f"pid {os.getpid()}"):
            with run_lock(tmp_path / "run"):
                pass
    with run_lock(tmp_path / "run"):
        pass


def test_only_rank_0_takes_the_lock(tmp_path, monkeypatch):
    with run_lock(tmp_path / "run"):
        monkeypatch.setenv("RANK", "1")
        with run_lock(tmp_path / "run") as lock_file:
            assert lock_file is None
