"""A second SIGINT/SIGTERM interrupts a training step that is taking too long.

The first signal asks the run to stop after its step (and checkpoint); a step that does not
end (here: one that sleeps) would make the run unstoppable, so a second signal raises.
"""

import signal
import subprocess
import sys
import textwrap
import time

import harness
import pytest

# `charlm run` whose 3rd training step announces itself (a marker file) and then takes a minute
SLOW_THIRD_STEP = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from charlm.cli import main
    from charlm.train_step import TrainStep
    original, calls = TrainStep.__call__, [0]
    def slow(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 3:
            Path(sys.argv[1]).touch()
            time.sleep(60)
        return original(self, *args, **kwargs)
    TrainStep.__call__ = slow
    sys.exit(main(sys.argv[2:]))
""")


def wait_for(path, timeout_s=120):
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_second_signal_interrupts_a_long_step_and_keeps_the_last_checkpoint(corpus, tmp_path, sig, code):
    out = tmp_path / "run"
    job = harness.write_job(tmp_path / "job.toml", harness.tiny_job(corpus, out, max_steps=10))
    marker = tmp_path / "in-slow-step"
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_THIRD_STEP, str(marker), "run", str(job)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for(marker)
        proc.send_signal(sig)
        time.sleep(1.0)
        assert proc.poll() is None  # the first signal waits for the step
        started = time.monotonic()
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert time.monotonic() - started < 20  # not the minute the step would take
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and stderr.splitlines()[-1] == f"interrupted by {signal.Signals(sig).name}"
    checkpoints = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert checkpoints == ["last.pt", "step-000001.pt", "step-000002.pt"]  # nothing partial, nothing temporary
    from charlm.checkpoint import load_checkpoint

    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == 2
