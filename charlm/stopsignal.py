"""SIGINT/SIGTERM as a request: the training loop finishes its step, checkpoints and exits 0.

A second signal does not wait for a step that is taking too long: it raises ``Interrupted``
(exit 130/143, the last checkpoint kept).
"""

from __future__ import annotations

import signal

from charlm.errors import Interrupted


class StopSignal:
    """While entered, SIGINT and SIGTERM set ``received`` (the signal's name) instead of raising."""

    def __init__(self):
        self.received: str | None = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        if self.received is not None:
            raise Interrupted(signum)
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
