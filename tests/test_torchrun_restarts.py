"""torchrun's own agent in the loop: a signal to torchrun itself, and an elastic restart
(`--max-restarts`) after a worker is killed, both continued by `--resume auto` to the same
losses as an uninterrupted run."""

import signal
import subprocess
import sys
import time
from pathlib import Path

from test_distributed import ENV, ROOT, assert_close, corpus, losses, train_here, wait_for_step, write_job  # noqa: F401

from charlm.checkpoint import load_checkpoint


def start_torchrun(*args: str, restarts: int = 0) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           f"--max-restarts={restarts}", "-m", "charlm", *args]
    return subprocess.Popen(cmd, cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)


def workers(agent: subprocess.Popen, timeout: float = 60) -> list[int]:
    """The pids of the agent's two worker processes (its direct children)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = Path(f"/proc/{agent.pid}/task/{agent.pid}/children").read_text().split()
        if len(children) == 2:
            return [int(pid) for pid in children]
        time.sleep(0.05)
    raise AssertionError("torchrun started no two workers")


def test_sigterm_to_torchrun_saves_once_and_resume_matches(corpus, tmp_path):
    steps = {"max_steps": 40, "checkpoint.every": 0}
    train_here(corpus, tmp_path / "whole", **steps)
    job = write_job(corpus, tmp_path / "cut", **steps)
    agent = start_torchrun("run", str(job))
    wait_for_step(tmp_path / "cut", 2, [agent])
    agent.send_signal(signal.SIGTERM)  # the agent forwards it to every worker
    out, err = agent.communicate(timeout=120)
    stopped = load_checkpoint(tmp_path / "cut/checkpoints/last.pt")["step"]
    assert 2 <= stopped < 40, out + err[-3000:]
    assert f"stopped by SIGTERM at step {stopped}" in out
    # the only traceback is torchrun's own report of the signal it received, never a worker's
    assert err.count("Traceback") == 1 and "SignalException" in err, err[-3000:]

    resumed = start_torchrun("run", str(job), "--resume", "auto")
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err[-3000:]
    assert sorted(losses(tmp_path / "cut")) == list(range(1, 41))
    assert_close(losses(tmp_path / "cut"), losses(tmp_path / "whole"))


def test_elastic_restart_after_a_killed_worker_resumes_from_the_newest_checkpoint(corpus, tmp_path):
    steps = {"max_steps": 40, "checkpoint.every": 4, "distributed.timeout_s": 20}
    train_here(corpus, tmp_path / "whole", **steps)
    job = write_job(corpus, tmp_path / "cut", **steps)
    agent = start_torchrun("run", str(job), "--resume", "auto", restarts=1)
    wait_for_step(tmp_path / "cut", 6, [agent])
    first = workers(agent)
    subprocess.run(["kill", "-KILL", str(first[1])], check=True)
    out, err = agent.communicate(timeout=240)
    assert agent.returncode == 0, err[-3000:]
    assert "resumed from" in out, out[-3000:]
    assert sorted(losses(tmp_path / "cut")) == list(range(1, 41))  # each step once, replayed steps replaced
    assert_close(losses(tmp_path / "cut"), losses(tmp_path / "whole"))
