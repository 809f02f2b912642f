"""SIGINT/SIGTERM as a request: the training loop finishes its step, checkpoints and exits 0."""

from __future__ import annotations

import signal


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
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
