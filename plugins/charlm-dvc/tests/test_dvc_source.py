"""The ``dvc`` data source against real git + DVC repositories (tests/conftest.py): through the
Python API (the source, then the packing ``charlm data pull`` runs), and through the installed
entry point with the CLI's default options."""

import hashlib
import json
from types import SimpleNamespace

import pytest
from dvc_project import V1, V2, Project, git, packed, run_charlm

from charlm.errors import CharLMError, UsageError
from charlm.prepare import prepare
from charlm_dvc import source as source_module
from charlm_dvc.source import DvcConfig, DvcSource

pytestmark = pytest.mark.filterwarnings("ignore:_NoneStep.value:DeprecationWarning")  # inside DVC 3.67's pygtrie use

def pull(out, **options):
    """What ``charlm data pull dvc --out OUT --val-fraction 0`` does, with these options."""
    source = DvcSource(DvcConfig(**options))
    files = source.fetch(out / "raw")
    return prepare(files, out, val_fraction=0, source={"name": "dvc", **source.provenance()})


@pytest.fixture
def two_versions(project, tmp_path):
    """The project with corpus v1 committed, then v2; a fresh clone (empty DVC cache)."""
    v1 = project.commit(V1, ["corpus"], "corpus v1")
    v2 = project.commit(V2, ["corpus"], "corpus v2")
    return project.clone(tmp_path / "clone"), v1, v2


def test_a_revision_from_a_fresh_clone_is_exactly_its_bytes(two_versions, tmp_path):
    clone, v1, _ = two_versions
    assert not (clone / ".dvc" / "cache").exists() and not (clone / "corpus").exists()
    out = tmp_path / "data"
    meta = pull(out, repo=str(clone), rev=v1)

    assert (out / "train.bin").read_bytes() == packed([V1["corpus/a.txt"], V1["corpus/b.txt"]])
    assert (out / "raw" / "corpus" / "a.txt").read_bytes() == V1["corpus/a.txt"]
    source = json.loads((out / "meta.json").read_text())["source"]
    assert source == meta["source"]
    assert source["name"] == "dvc" and source["repo"] == str(clone.resolve())
    assert (source["rev"], source["commit"], source["remote"]) == (v1, v1, "store")
    assert source["files"] == [
        {"path": name, "md5": hashlib.md5(V1[name]).hexdigest(), "bytes": len(V1[name])} for name in ("corpus/a.txt", "corpus/b.txt")
    ]


def test_two_revisions_give_two_datasets_each_matching_its_revision(two_versions, tmp_path):
    clone, v1, v2 = two_versions
    expected = {
        v1: packed([V1["corpus/a.txt"], V1["corpus/b.txt"]]),
        v2: packed([V2["corpus/a.txt"], V1["corpus/b.txt"], V2["corpus/c.txt"]]),
    }
    digests = {}
    for rev in (v2, v1):  # v1 second, into the same --out: v2's extra file must not leak in
        meta = pull(tmp_path / "data", repo=str(clone), rev=rev)
        assert (tmp_path / "data" / "train.bin").read_bytes() == expected[rev]
        assert meta["train"]["sha256"] == hashlib.sha256(expected[rev]).hexdigest()
        assert meta["source"]["commit"] == rev
        digests[rev] = meta["train"]["sha256"]
    assert digests[v1] != digests[v2]


def test_a_branch_name_and_the_workspace(project, tmp_path, monkeypatch):
    v1 = project.commit(V1, ["corpus"], "corpus v1")
    git(project.root, "tag", "data-v1")
    project.commit(V2, ["corpus"], "corpus v2")
    clone = project.clone(tmp_path / "clone")
    assert pull(tmp_path / "tagged", repo=str(clone), rev="data-v1")["source"]["commit"] == v1

    monkeypatch.chdir(clone)  # no repo: the current directory's; no rev: its workspace
    source = pull(tmp_path / "workspace")["source"]
    assert (source["repo"], source["rev"], source["commit"], source["workspace_dirty"]) == (str(clone.resolve()), None, git(clone, "rev-parse", "HEAD"), False)
    assert [f["path"] for f in source["files"]] == ["corpus/a.txt", "corpus/b.txt", "corpus/c.txt"]


def test_paths_select_tracked_files_and_directories(project, tmp_path):
    v1 = project.commit({**V1, "extra/d.txt": b"another tracked file\n"}, ["corpus", "extra/d.txt"], "v1")
    clone = project.clone(tmp_path / "clone")
    meta = pull(tmp_path / "one", repo=str(clone), rev=v1, path="corpus/b.txt")  # a file inside a tracked directory
    assert (tmp_path / "one" / "train.bin").read_bytes() == packed([V1["corpus/b.txt"]])
    assert [f["path"] for f in meta["source"]["files"]] == ["corpus/b.txt"]
    meta = pull(tmp_path / "two", repo=str(clone), rev=v1, path=["extra/d.txt", "corpus"])
    assert [f["path"] for f in meta["source"]["files"]] == ["corpus/a.txt", "corpus/b.txt", "extra/d.txt"]


def assert_nothing_written(out):
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"rev": "0123456789abcdef0123456789abcdef01234567"}, UsageError, "no such git revision"),
        ({"rev": "no-such-branch"}, UsageError, "no such git revision"),
        ({"path": "notes.txt"}, UsageError, "path='notes.txt': not tracked by DVC"),
        ({"path": ["corpus", "missing.txt"]}, UsageError, "path='missing.txt': no such file or directory"),
        ({"remote": "elsewhere"}, UsageError, "remote='elsewhere': no such DVC remote"),
    ],
)
def test_wrong_options_are_usage_errors(project, tmp_path, options, error, message):
    project.commit(V1, ["corpus"], "v1")
    with pytest.raises(error, match=message) as caught:
        pull(tmp_path / "data", repo=str(project.clone(tmp_path / "clone")), **options)
    assert caught.value.exit_code == 2
    assert_nothing_written(tmp_path / "data")


def test_not_a_dvc_repository(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    git(plain, "init", "-q")
    with pytest.raises(UsageError, match="not a DVC repository"):
        pull(tmp_path / "data", repo=str(plain))


def test_no_remote_configured(tmp_path):
    project = Project(tmp_path / "project", remote=None)
    project.commit(V1, ["corpus"], "v1", push=False)
    with pytest.raises(CharLMError, match="no DVC remote configured") as caught:
        pull(tmp_path / "data", repo=str(project.root))
    assert caught.value.exit_code == 1
    assert_nothing_written(tmp_path / "data")


def test_a_failed_fetch_writes_nothing(project, tmp_path):
    project.commit(V1, ["corpus"], "v1")
    lost = hashlib.md5(V1["corpus/b.txt"]).hexdigest()
    (project.remote / "files" / "md5" / lost[:2] / lost[2:]).unlink()
    with pytest.raises(CharLMError, match=f"dvc fetch from remote 'store' failed: .*{lost}") as caught:
        pull(tmp_path / "data", repo=str(project.clone(tmp_path / "clone")))
    assert caught.value.exit_code == 1
    assert_nothing_written(tmp_path / "data")


def test_an_interrupted_copy_leaves_only_complete_files(project, tmp_path, monkeypatch):
    v1 = project.commit(V1, ["corpus"], "v1")
    clone = project.clone(tmp_path / "clone")
    updates = []

    def md5_interrupted_in_the_second_file():  # a.txt is 6 chunks of 4 bytes, b.txt 3
        digest = hashlib.md5()

        def update(chunk):
            updates.append(chunk)
            if len(updates) == 8:
                raise KeyboardInterrupt
            digest.update(chunk)

        return SimpleNamespace(update=update, hexdigest=digest.hexdigest)

    monkeypatch.setattr(source_module, "CHUNK_BYTES", 4)
    monkeypatch.setattr(source_module, "hashlib", SimpleNamespace(md5=md5_interrupted_in_the_second_file))
    with pytest.raises(KeyboardInterrupt):
        pull(tmp_path / "data", repo=str(clone), rev=v1)
    written = [p for p in (tmp_path / "data").rglob("*") if p.is_file()]
    assert [(p.name, p.read_bytes()) for p in written] == [("a.txt", V1["corpus/a.txt"])]


def test_cli_pulls_the_current_repository_through_the_entry_point(project, tmp_path):
    project.commit(V1, ["corpus"], "v1")
    clone = project.clone(tmp_path / "clone")
    result = run_charlm(clone, "data", "pull", "dvc", "--out", "data", "--val-fraction", "0")
    assert result.returncode == 0, result.stderr
    assert (clone / "data" / "train.bin").read_bytes() == packed([V1["corpus/a.txt"], V1["corpus/b.txt"]])
    assert json.loads((clone / "data" / "meta.json").read_text())["source"]["remote"] == "store"


def test_cli_outside_a_dvc_repository_is_one_line(tmp_path):
    result = run_charlm(tmp_path, "data", "pull", "dvc", "--out", "data")
    assert result.returncode == 2
    assert result.stderr.strip() == f"usage error: {tmp_path}: not a DVC repository (`dvc init` makes one; or pass repo=PATH_OR_URL)"


def test_passes_the_data_source_contract_check(two_versions):
    from charlm.testing import check_data_source

    clone, v1, _ = two_versions
    meta = check_data_source("dvc", {"repo": str(clone), "rev": v1})
    assert meta["source"]["commit"] == v1
