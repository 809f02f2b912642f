"""Files that appear only once complete: written beside their destination, then renamed.

A crash or an error leaves either the previous file or none, never a partial one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

# ".NAME.xxxxxxxx.tmp": what temp_beside creates (tempfile's 8 random characters)
TEMP_NAME = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp")


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Temporary files are created 0600; finished files get the permissions open() would give.
FILE_MODE = 0o666 & ~_read_umask()


def temp_beside(path: Path, mode: str = "wb"):
    """An open temporary file in ``path``'s directory (``.name`` is its path); rename it with ``os.replace``."""
    tmp = tempfile.NamedTemporaryFile(mode, dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    os.chmod(tmp.name, FILE_MODE)
    return tmp


def remove_stale_temps(directory: str | Path, names: Iterable[str] | None = None) -> list[Path]:
    """Delete the temporary files that an interrupted write (SIGKILL, power loss) left in ``directory``.

    Only temporaries of the destinations in ``names`` go (all of them when None): call it
    where no other process can be writing those files, e.g. under the run lock. Returns
    what was removed.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    wanted = None if names is None else set(names)
    removed = []
    for path in directory.iterdir():
        match = TEMP_NAME.fullmatch(path.name)
        if match and (wanted is None or match["name"] in wanted) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the body is done: renames that belong together happen together.

    A signal that arrives meanwhile is raised again on leaving, for the handler that was in place.
    """
    if threading.current_thread() is not threading.main_thread():  # only the main thread sets handlers
        yield
        return
    held: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: held.append(signum)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if held:
            signal.raise_signal(held[0])


def write_atomic(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(path)
    try:
        with tmp:
            tmp.write(data)
        os.replace(tmp.name, path)
    except BaseException:  # a full disk, a signal: no temporary file stays behind
        Path(tmp.name).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: Path, data: dict) -> Path:
    return write_atomic(path, (json.dumps(data, indent=2) + "\n").encode())
