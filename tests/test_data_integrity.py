"""Silent data damage: a split is checked against meta.json (size on open, sha256 at eval)."""

import json
import shutil
from pathlib import Path

import pytest
from helpers import charlm_subprocess

from charlm.cli import main
from charlm.data import open_split, verify_split
from charlm.errors import CharLMError
from charlm.prepare import prepare


def make_texts(root: Path, docs: int, words: bytes) -> Path:
    root.mkdir()
    for d in range(docs):
        (root / f"doc{d}.txt").write_bytes(words * (30 + d))
    return root


@pytest.fixture
def copy(corpus, tmp_path) -> Path:
    return Path(shutil.copytree(corpus, tmp_path / "data"))


def flip_byte(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x20
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("split", ["train", "val"])
def test_a_flipped_byte_is_caught_by_sha256_at_eval(copy, checkpoint, split, capsys):
    target = copy / f"{split}.bin"
    flip_byte(target, target.stat().st_size // 2)
    open_split(target)  # same size, same document ends: only the hash can tell
    code = main(["eval", "--checkpoint", str(checkpoint), "--data", str(target), "--no-baselines", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1
    assert len(err.strip().splitlines()) == 1
    assert str(target) in err and "sha256" in err and "charlm data prepare" in err


def test_eval_of_a_damaged_split_is_one_line_from_the_real_command(copy, checkpoint):
    flip_byte(copy / "val.bin", 3)
    proc = charlm_subprocess("eval", "--checkpoint", checkpoint, "--data", copy / "val.bin", "--no-baselines")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1


def test_an_intact_split_passes_the_full_check(corpus, checkpoint, capsys):
    verify_split(corpus / "val.bin", full=True)
    assert main(["eval", "--checkpoint", str(checkpoint), "--data", str(corpus / "val.bin"), "--no-baselines", "--device", "cpu"]) == 0


def test_a_consistent_pair_that_meta_json_does_not_describe_is_caught_on_open(copy, tmp_path):
    other = tmp_path / "other"
    prepare([make_texts(tmp_path / "texts", 5, b"a different corpus entirely ")], other, val_fraction=0.2, seed=0)
    for suffix in (".bin", ".idx"):
        shutil.copy(other / f"train{suffix}", copy / f"train{suffix}")
    with pytest.raises(CharLMError, match="meta.json records"):
        open_split(copy / "train.bin")


def test_a_split_without_meta_json_is_checked_against_its_idx_only(copy):
    (copy / "meta.json").unlink()
    flip_byte(copy / "val.bin", 3)
    verify_split(copy / "val.bin", full=True)
    assert len(open_split(copy / "val.bin")) == (copy / "val.bin").stat().st_size


@pytest.mark.parametrize("meta", [b"{not json", b"\xff\xfe", b'{"val": {"file": "val.bin", "bytes": "many"}}'])
def test_an_unreadable_meta_json_is_one_clear_error(copy, meta):
    (copy / "meta.json").write_bytes(meta)
    with pytest.raises(CharLMError, match="meta.json") as info:
        open_split(copy / "val.bin")
    assert len(str(info.value).splitlines()) == 1


def test_meta_json_records_what_verify_split_checks(corpus):
    meta = json.loads((corpus / "meta.json").read_text())
    assert {meta[s]["file"] for s in ("train", "val")} == {"train.bin", "val.bin"}
