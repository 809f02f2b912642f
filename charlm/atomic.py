"""Files that appear only once complete: written beside their destination, then renamed.

A crash or an error leaves either the previous file or none, never a partial one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


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


def write_atomic(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with temp_beside(path) as tmp:
        tmp.write(data)
    os.replace(tmp.name, path)
    return path


def write_json_atomic(path: Path, data: dict) -> Path:
    return write_atomic(path, (json.dumps(data, indent=2) + "\n").encode())
