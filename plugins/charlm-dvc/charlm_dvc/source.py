"""The ``dvc`` data source: a DVC-tracked corpus at a git revision, from a DVC remote.

``fetch`` opens the repository at ``rev`` with DVC's Python API, checks the options against
it (tracked paths, a remote), fetches the tracked files from the remote into DVC's cache
(``Repo.fetch`` skips what the cache holds already), then copies them out of the cache into
``DIR/raw`` under their repository paths. Each copy is checked against DVC's md5 and appears
only once complete, so a failed or interrupted pull leaves no partial file.
"""

from __future__ import annotations

import hashlib
import logging
import os
from contextlib import contextmanager
from functools import partial
from pathlib import Path, PurePosixPath

import attrs

from charlm import CharLMError, UsageError, temp_beside

CHUNK_BYTES = 1 << 20
DVC_LOGGERS = ("dvc", "dvc_data", "dvc_objects", "scmrepo")  # DVC and the libraries it logs failures through


def _as_list(value: list[str] | str) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


@attrs.define
class DvcConfig:
    repo: str | None = None  # a local path or a git URL; None: the DVC repository around the current directory
    rev: str | None = None  # a git commit, branch or tag; None: the workspace, as `dvc pull` does
    path: list[str] | str = attrs.field(factory=list, converter=_as_list)  # tracked files or directories, repository-relative; none: all
    remote: str | None = None  # a DVC remote's name; None: the repository's default remote


class DvcSource:
    """The files DVC tracks in a repository at one revision, one document each, in path order."""

    def __init__(self, cfg: DvcConfig):
        self.cfg = cfg
        self.where = cfg.repo or os.getcwd()
        self.fetched: dict | None = None  # what fetch found: its provenance

    def provenance(self) -> dict:
        """The repository, revision, remote and every input's DVC md5 (complete once ``fetch`` ran)."""
        return self.fetched or {"repo": self.where, "rev": self.cfg.rev, "remote": self.cfg.remote, "paths": self.cfg.path}

    def fetch(self, dest: Path) -> list[Path]:
        with _dvc_errors(self.where, self.cfg.rev) as dvc_log, self._open() as repo:
            remote = self._remote(repo)
            tracked = self._tracked_files(repo)
            try:
                repo.fetch(targets=self.cfg.path or None, remote=remote)
            except Exception as exc:
                raise CharLMError(f"dvc fetch from remote {remote!r} failed: {_with_details(exc, dvc_log)}") from exc
            files = [_copy_out(repo.dvcfs, name, info, dest) for name, info in tracked.items()]
            self.fetched = {
                "repo": self.where if "://" in self.where else str(Path(self.where).resolve()),
                "rev": self.cfg.rev,
                "commit": repo.scm.resolve_rev(self.cfg.rev or "HEAD"),
                **({} if self.cfg.rev else {"workspace_dirty": repo.scm.is_dirty(untracked_files=False)}),
                "remote": remote,
                "files": [{"path": name, "md5": _md5(info), "bytes": file.stat().st_size} for (name, info), file in zip(tracked.items(), files)],
            }
        return files

    def _open(self):
        from dvc.repo import Repo

        if os.path.exists(self.where):  # Repo.open would invent a remote from the local cache
            return Repo(self.where, rev=self.cfg.rev)
        return Repo.open(self.where, rev=self.cfg.rev)

    def _remote(self, repo) -> str:
        remotes = repo.config["remote"]
        name = self.cfg.remote or repo.config["core"].get("remote")
        if name is None:
            raise CharLMError(
                f"{self.where}: no DVC remote configured; add one with `dvc remote add -d NAME URL`"
                f" or pass remote=NAME (configured: {', '.join(remotes) or 'none'})"
            )
        if name not in remotes:
            raise UsageError(f"remote={name!r}: no such DVC remote in {self.where} (configured: {', '.join(remotes) or 'none'})")
        return name

    def _tracked_files(self, repo) -> dict[str, dict]:
        """Repository path -> DVC info of each tracked file the options name, sorted by path."""
        fs = repo.dvcfs
        at = f" at rev {self.cfg.rev}" if self.cfg.rev else ""
        found = {}
        for spec in self.cfg.path or ["/"]:
            try:
                info = fs.info(spec)
            except FileNotFoundError:
                raise UsageError(f"path={spec!r}: no such file or directory in {self.where}{at}") from None
            if info["type"] == "directory":
                files = {name: entry for root, _, names in fs.walk(info["name"], dvc_only=True, detail=True) for name, entry in _joined(root, names)}
            else:
                files = {info["name"]: info} if "dvc_info" in info else {}
            if not files:
                raise UsageError(f"path={spec!r}: not tracked by DVC in {self.where}{at} (`dvc add` it, or name a tracked path)")
            found.update(files)
        if not found:
            raise UsageError(f"{self.where}{at}: DVC tracks no files")
        return {name.lstrip("/"): found[name] for name in sorted(found)}


def _joined(root: str, names: dict) -> list[tuple[str, dict]]:
    return [(f"{root.rstrip('/')}/{name}", entry) for name, entry in names.items()]


def _md5(info: dict) -> str:
    dvc_info = info["dvc_info"]
    return dvc_info.get("md5") or dvc_info.get("md5-dos2unix")  # the latter: files added by DVC 2


def _copy_out(fs, name: str, info: dict, dest: Path) -> Path:
    """Copy one tracked file from DVC's cache to ``dest / name``, checked against DVC's md5
    (files DVC 2 hashed with line endings normalised are copied unchecked)."""
    path = dest.joinpath(*PurePosixPath(name).parts)
    if not path.resolve().is_relative_to(dest.resolve()):
        raise CharLMError(f"tracked path {name!r} escapes {dest}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(path)
    try:
        digest = hashlib.md5()
        with tmp, fs.open(info["name"], "rb") as data:
            for chunk in iter(partial(data.read, CHUNK_BYTES), b""):
                tmp.write(chunk)
                digest.update(chunk)
        expected = info["dvc_info"].get("md5")
        if expected and digest.hexdigest() != expected:
            raise CharLMError(f"{name}: DVC's cache holds bytes with md5 {digest.hexdigest()}, expected {expected}; run `dvc gc` or fetch again")
        os.replace(tmp.name, path)
        return path
    finally:
        Path(tmp.name).unlink(missing_ok=True)  # gone already after a successful rename


@contextmanager
def _dvc_errors(where: str, rev: str | None):
    """DVC's exceptions as one-line CharLM errors. DVC logs a failure's details and raises a
    summary ("2 files failed to download"): its log is collected here, not printed, so that
    the error can carry the first detail."""
    from dvc.exceptions import DvcException, NotDvcRepoError
    from dvc.scm import CloneError, RevError

    collected = _Collected()
    loggers = [logging.getLogger(name) for name in DVC_LOGGERS]
    saved = [(logger.handlers, logger.propagate) for logger in loggers]
    for logger in loggers:
        logger.handlers, logger.propagate = [collected], False
    try:
        yield collected.messages
    except NotDvcRepoError:
        raise UsageError(f"{where}: not a DVC repository (`dvc init` makes one; or pass repo=PATH_OR_URL)") from None
    except RevError:
        raise UsageError(f"rev={rev!r}: no such git revision in {where}") from None
    except CloneError as exc:
        raise CharLMError(f"cannot clone {where}: {_with_details(exc, collected.messages)}") from None
    except DvcException as exc:
        raise CharLMError(f"dvc: {_with_details(exc, collected.messages)}") from exc
    finally:
        for logger, (handlers, propagate) in zip(loggers, saved):
            logger.handlers, logger.propagate = handlers, propagate


class _Collected(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        cause = record.exc_info[1] if record.exc_info else None
        self.messages.append(f"{record.getMessage()} - {cause}" if cause else record.getMessage())


def _with_details(exc: Exception, log: list[str]) -> str:
    first = " ".join(log[0].split()) if log else ""
    return f"{exc} ({first})" if first and first not in str(exc) else str(exc)
