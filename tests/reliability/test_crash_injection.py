"""Crash injection: a training process SIGKILLed at random moments loses nothing and leaks nothing.

After every kill, ``charlm run --resume auto`` continues; at the end the parameters and
optimizer state equal an uninterrupted run's, no ``.tmp`` file is left, and metrics.jsonl
holds each step once. ``make soak`` runs 200 kills.
"""

import random
import shutil

import harness
import pytest

KILLS = 20
PROMISES = ("corrupt", "leaked", "duplicated", "missing", "diverged", "errors")


@pytest.fixture
def scratch(tmp_path):
    path = harness.scratch_dir(tmp_path)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_sigkilled_runs_resume_exactly_and_leave_nothing_behind(corpus, scratch):
    counts = harness.crash_injection(corpus, scratch, KILLS, random.Random(20))
    assert counts["injections"] >= KILLS * 3 // 4, counts  # most kills hit a live process
    assert {k: counts[k] for k in PROMISES} == dict.fromkeys(PROMISES, 0), f"{counts}; logs in {scratch}"
