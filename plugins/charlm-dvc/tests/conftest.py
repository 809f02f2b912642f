"""Fixtures: DVC and git isolated from the user's settings; a project with a local remote."""

import pytest
from dvc_project import Project


@pytest.fixture(autouse=True)
def dvc_isolated(tmp_path_factory, monkeypatch):
    """DVC's per-user and per-machine state in a temp dir, and no analytics; a git identity."""
    home = tmp_path_factory.mktemp("dvc-home")
    for var, sub in (("DVC_GLOBAL_CONFIG_DIR", "global"), ("DVC_SYSTEM_CONFIG_DIR", "system"), ("DVC_SITE_CACHE_DIR", "site")):
        monkeypatch.setenv(var, str(home / sub))
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    for who in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{who}_NAME", "test")
        monkeypatch.setenv(f"GIT_{who}_EMAIL", "test@example.com")


@pytest.fixture
def project(tmp_path):
    return Project(tmp_path / "project", tmp_path / "remote")
