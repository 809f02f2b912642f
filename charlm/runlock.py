"""One training run per directory: an advisory lock on ``OUT_DIR/run.lock``.

``charlm run`` takes the lock before it writes anything else in the run directory and
holds it until it exits; a second ``charlm run`` on the same directory (fresh or
``--resume auto``) fails at once with one line naming the holder's pid, host and start
time. The lock is ``fcntl.flock`` on an open file, so the kernel releases it when the
holding process dies, however it dies (SIGKILL, OOM, power loss): there is never a
stale lock to detect or remove, and the file's contents only describe the last holder.
The file is left in place on release: deleting it would let two processes lock two
different files of the same name.

Under ``torchrun`` only rank 0 takes the lock: the other ranks write nothing in
``OUT_DIR``, and locking from every rank would make the run refuse itself. flock is
per host, so two runs on different machines sharing a network directory are not
kept apart unless the filesystem forwards flock (NFSv4 does on Linux).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from charlm.errors import CharLMError

LOCK_NAME = "run.lock"


class RunLocked(CharLMError):
    """Another process holds the run directory."""


def holder(lock_file: Path) -> str:
    """Who the lock file says holds it, as words for an error line."""
    try:
        info = json.loads(lock_file.read_text(encoding="utf-8"))
        return f"pid {info['pid']} on {info['host']}, since {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):  # the holder has not written it yet
        return "another process"


@contextlib.contextmanager
def run_lock(out_dir: str | Path) -> Iterator[Path | None]:
    """Hold ``OUT_DIR/run.lock`` for the body (rank 0 only); ``RunLocked`` if another process holds it."""
    if int(os.environ.get("RANK", "0")) != 0:
        yield None
        return
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lock_file = out / LOCK_NAME
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLocked(
                f"{out} is in use by another charlm run ({holder(lock_file)}); wait for it to finish or stop it"
            ) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S %z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield lock_file
    finally:
        os.close(fd)  # closing the last descriptor releases the flock
