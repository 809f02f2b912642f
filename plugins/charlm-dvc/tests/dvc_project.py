"""Real git + DVC repositories for the tests: a local-directory remote, no network."""

import subprocess
import sys
from pathlib import Path

# Two versions of a small corpus: v2 changes a.txt and adds c.txt; notes.txt stays in git.
V1 = {"corpus/a.txt": b"first text, version one\n", "corpus/b.txt": b"second text\n", "notes.txt": b"in git only\n"}
V2 = {"corpus/a.txt": b"first text, version two\n", "corpus/c.txt": b"a third text\n"}


def packed(docs: list[bytes]) -> bytes:
    """train.bin of these documents in this order (separator 0)."""
    return b"".join(doc + b"\0" for doc in docs)


def run_charlm(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "charlm", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


class Project:
    """A git repository with DVC initialised and a default remote ``store`` in a local directory."""

    def __init__(self, root: Path, remote: Path | None):
        from dvc.repo import Repo

        self.root, self.remote = root, remote
        root.mkdir()
        git(root, "init", "-q", "-b", "main")
        Repo.init(str(root)).close()
        if remote is not None:
            with Repo(str(root)) as repo, repo.config.edit() as conf:
                conf["remote"]["store"] = {"url": str(remote)}
                conf["core"]["remote"] = "store"
        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", "dvc init")

    def commit(self, files: dict[str, bytes], tracked: list[str], message: str, push: bool = True) -> str:
        """Write ``files``, ``dvc add`` the ``tracked`` paths, push them to the remote, commit; the commit's sha."""
        from dvc.repo import Repo

        for name, data in files.items():
            path = self.root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        with Repo(str(self.root)) as repo:
            repo.add([str(self.root / name) for name in tracked])
            if push:
                repo.push()
        git(self.root, "add", "-A")
        git(self.root, "commit", "-q", "-m", message)
        return git(self.root, "rev-parse", "HEAD")

    def clone(self, dest: Path) -> Path:
        """A fresh clone: the .dvc files, an empty DVC cache."""
        git(dest.parent, "clone", "-q", str(self.root), str(dest))
        return dest
