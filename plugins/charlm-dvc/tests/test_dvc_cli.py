"""``charlm data pull dvc --out DIR key=value ...`` as a user types it: real subprocesses of
``python -m charlm`` on real git + DVC repositories (tests/conftest.py).

The options on the command line need ``charlm data pull NAME [key=value ...]`` from the
plugin-platform issue (14.1); test_dvc_source.py covers the same behaviour through the API."""

import hashlib
import json

import pytest
from dvc_project import V1, V2, git, packed, run_charlm

pytestmark = pytest.mark.filterwarnings("ignore:_NoneStep.value:DeprecationWarning")  # inside DVC 3.67's pygtrie use

def pull(cwd, out, *options):
    result = run_charlm(cwd, "data", "pull", "dvc", "--out", out, "--val-fraction", "0", *options)
    assert result.returncode == 0, result.stderr
    return json.loads((cwd / out / "meta.json").read_text())


def test_each_revision_is_restored_exactly_from_a_fresh_clone(project, tmp_path):
    v1 = project.commit(V1, ["corpus"], "corpus v1")
    v2 = project.commit(V2, ["corpus"], "corpus v2")
    clone = project.clone(tmp_path / "clone")
    expected = {
        v1: packed([V1["corpus/a.txt"], V1["corpus/b.txt"]]),
        v2: packed([V2["corpus/a.txt"], V1["corpus/b.txt"], V2["corpus/c.txt"]]),
    }
    metas = {rev: pull(clone, f"data-{rev[:7]}", f"rev={rev}") for rev in (v1, v2)}
    for rev, meta in metas.items():
        assert (clone / f"data-{rev[:7]}" / "train.bin").read_bytes() == expected[rev]
        assert meta["train"]["sha256"] == hashlib.sha256(expected[rev]).hexdigest()
        assert (meta["source"]["name"], meta["source"]["commit"], meta["source"]["remote"]) == ("dvc", rev, "store")
    assert metas[v1]["train"]["sha256"] != metas[v2]["train"]["sha256"]


def test_repo_path_and_remote_options(project, tmp_path):
    v1 = project.commit(V1, ["corpus"], "v1")
    git(project.root, "tag", "data-v1")
    clone = project.clone(tmp_path / "clone")
    meta = pull(tmp_path, "data", f"repo={clone}", "rev=data-v1", "path=corpus/b.txt", "remote=store")
    assert (tmp_path / "data" / "train.bin").read_bytes() == packed([V1["corpus/b.txt"]])
    assert meta["source"]["commit"] == v1
    assert meta["source"]["files"] == [{"path": "corpus/b.txt", "md5": hashlib.md5(V1["corpus/b.txt"]).hexdigest(), "bytes": len(V1["corpus/b.txt"])}]


def test_a_wrong_option_is_one_line_and_exit_2(project, tmp_path):
    project.commit(V1, ["corpus"], "v1")  # the other wrong options: test_dvc_source.py
    clone = project.clone(tmp_path / "clone")
    result = run_charlm(clone, "data", "pull", "dvc", "--out", "data", "rev=no-such-branch")
    assert result.returncode == 2
    assert result.stderr == f"usage error: rev='no-such-branch': no such git revision in {clone}\n"
    assert not (clone / "data").exists()


def test_without_the_plugin_the_core_names_it(tmp_path):
    result = run_charlm(tmp_path, "--disable-plugins", "dvc", "data", "pull", "dvc", "--out", "data")
    assert result.returncode == 2
    assert result.stderr.strip().endswith("is charlm-dvc installed?")
