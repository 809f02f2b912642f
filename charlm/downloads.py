"""Downloads with the standard library: a file appears only once complete and verified.

Data is streamed into a temporary file next to the destination, hashed on the way, and
renamed into place only when its size and sha256 match; any failure removes the
temporary file, so nothing half-written is ever left behind.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from functools import partial
from pathlib import Path

from tqdm import tqdm

from charlm import __version__
from charlm.atomic import temp_beside
from charlm.errors import CharLMError

CHUNK_BYTES = 1 << 16
MAX_PAGE_BYTES = 16 << 20  # an index page larger than this is not a package's simple page
USER_AGENT = f"charlm/{__version__} (+urllib)"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(partial(f.read, 1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_verified(path: Path, sha256: str) -> bool:
    """Whether ``path`` exists and has this sha256: a cached download to reuse."""
    return path.is_file() and sha256_of(path) == sha256


def download(url: str, dest: Path, *, sha256: str, size: int | None = None, timeout: float = 15.0, advice: str) -> Path:
    """Fetch ``url`` into ``dest``, verified against ``sha256`` (and ``size``, when known).

    ``timeout`` bounds the connection and each read. On failure, raises a CharLMError
    that says what failed, followed by ``advice``.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(dest)
    try:
        with tmp:
            digest, received = hashlib.sha256(), 0
            with _open(url, timeout) as response:
                length = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=length, unit="B", unit_scale=True, desc=dest.name, disable=None) as bar:
                    for chunk in iter(partial(response.read, CHUNK_BYTES), b""):
                        tmp.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
            tmp.flush()
            os.fsync(tmp.fileno())
        if size is not None and received != size:
            raise CharLMError(f"download of {url} failed: got {received} bytes, expected {size}; {advice}")
        if digest.hexdigest() != sha256:
            raise CharLMError(f"download of {url} failed: sha256 {digest.hexdigest()} does not match the expected {sha256}; {advice}")
        os.replace(tmp.name, dest)
        return dest
    except (OSError, http.client.HTTPException) as exc:
        raise CharLMError(f"download of {url} failed: {_reason(exc)}; {advice}") from exc
    finally:
        Path(tmp.name).unlink(missing_ok=True)  # gone already after a successful rename


def fetch_page(url: str, *, timeout: float = 15.0, advice: str) -> tuple[str, str]:
    """A small text resource (an index page): ``(text, final url after redirects)``."""
    try:
        with _open(url, timeout, accept="text/html") as response:
            body = response.read(MAX_PAGE_BYTES + 1)
            final_url = response.geturl()
    except (OSError, http.client.HTTPException) as exc:
        raise CharLMError(f"could not read {url}: {_reason(exc)}; {advice}") from exc
    if len(body) > MAX_PAGE_BYTES:
        raise CharLMError(f"could not read {url}: larger than {MAX_PAGE_BYTES} bytes; {advice}")
    return body.decode("utf-8", errors="replace"), final_url


def _open(url: str, timeout: float, accept: str = "*/*"):
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": accept})
    return urllib.request.urlopen(request, timeout=timeout)


def _reason(exc: Exception) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    if isinstance(exc, http.client.IncompleteRead):
        return "the connection closed before the transfer finished"
    return str(exc) or type(exc).__name__
