"""`charlm data prepare` and the .bin/.idx format: round-trips, inputs, splits, corrupt files."""

import gzip
import json
import struct

import numpy as np
import pytest

from charlm.cli import main
from charlm.data import HEADER, SplitWriter, open_split
from charlm.errors import CharLMError, UsageError
from charlm.prepare import prepare


def read_docs(path):
    split = open_split(path)
    return [split.document(i) for i in range(split.doc_count)]


def prepare_cli(capsys, *args):
    code = main(["data", "prepare", *map(str, args)])
    return code, capsys.readouterr()


def test_round_trip_keeps_every_byte(tmp_path):
    docs = [b"hello\n", bytes(range(256)), b"", b"\x00\x00inner separators\x00", b"last"]
    for i, doc in enumerate(docs):
        (tmp_path / f"in{i}.bin").write_bytes(doc)
    meta = prepare([tmp_path / f"in{i}.bin" for i in range(len(docs))], tmp_path / "out", val_fraction=0)
    assert read_docs(tmp_path / "out/train.bin") == docs
    assert not (tmp_path / "out/val.bin").exists()
    assert meta["train"]["documents"] == len(docs)
    assert meta["train"]["bytes"] == sum(map(len, docs)) + len(docs)
    split = open_split(tmp_path / "out/train.bin")
    assert split.tokens.dtype == np.uint8 and len(split) == meta["train"]["bytes"]
    assert split.doc_offsets[-1] == len(split)


def test_directory_jsonl_gz_and_glob_inputs(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"plain")
    (src / "sub" / "b.txt.gz").write_bytes(gzip.compress(b"gzipped"))
    (src / ".hidden").write_bytes(b"skipped")
    (src / "r.jsonl").write_text('{"text": "one"}\n\n{"text": "tw\\u00f6", "id": 2}\n')
    (tmp_path / "more.jsonl.gz").write_bytes(gzip.compress(b'{"body": "x"}\n{"body": "y"}\n'))
    prepare([src], tmp_path / "dir", val_fraction=0)
    assert read_docs(tmp_path / "dir/train.bin") == [b"plain", b"one", "twö".encode(), b"gzipped"]
    prepare([str(tmp_path / "*.jsonl.gz")], tmp_path / "glob", val_fraction=0, jsonl_field="body")
    assert read_docs(tmp_path / "glob/train.bin") == [b"x", b"y"]


def test_separator_option(tmp_path, capsys):
    (tmp_path / "a").write_bytes(b"A")
    (tmp_path / "b").write_bytes(b"B")
    code, _ = prepare_cli(capsys, tmp_path / "a", tmp_path / "b", "--out", tmp_path / "out", "--separator", "0x0a", "--val-fraction", "0")
    assert code == 0
    assert (tmp_path / "out/train.bin").read_bytes() == b"A\nB\n"
    assert json.loads((tmp_path / "out/meta.json").read_text())["separator"] == 10


def make_jsonl(path, n):
    path.write_text("".join(json.dumps({"text": f"document {i}"}) + "\n" for i in range(n)))
    return [f"document {i}".encode() for i in range(n)]


def test_split_is_deterministic_and_partitions_documents(tmp_path):
    docs = make_jsonl(tmp_path / "c.jsonl", 50)
    a = prepare([tmp_path / "c.jsonl"], tmp_path / "a", val_fraction=0.2, seed=7)
    b = prepare([tmp_path / "c.jsonl"], tmp_path / "b", val_fraction=0.2, seed=7)
    c = prepare([tmp_path / "c.jsonl"], tmp_path / "c", val_fraction=0.2, seed=8)
    assert a["train"]["sha256"] == b["train"]["sha256"] and a["val"]["sha256"] == b["val"]["sha256"]
    assert a["val"]["sha256"] != c["val"]["sha256"]
    train, val = read_docs(tmp_path / "a/train.bin"), read_docs(tmp_path / "a/val.bin")
    assert len(val) == 10 and sorted(train + val) == sorted(docs)
    assert train == [d for d in docs if d in train]  # input order is kept within a split
    assert a["split"] == {"rule": "val_fraction", "val_fraction": 0.2, "seed": 7, "val_documents": 10}


def test_val_inputs_and_val_docs_rules(tmp_path):
    docs = make_jsonl(tmp_path / "c.jsonl", 6)
    (tmp_path / "held.txt").write_bytes(b"held out")
    prepare([tmp_path / "c.jsonl"], tmp_path / "vi", val_inputs=[tmp_path / "held.txt"])
    assert read_docs(tmp_path / "vi/train.bin") == docs
    assert read_docs(tmp_path / "vi/val.bin") == [b"held out"]
    prepare([tmp_path / "c.jsonl"], tmp_path / "vd", val_docs=[0, 4])
    assert read_docs(tmp_path / "vd/val.bin") == [docs[0], docs[4]]
    with pytest.raises(UsageError, match="6 documents"):
        prepare([tmp_path / "c.jsonl"], tmp_path / "bad", val_docs=[6])
    with pytest.raises(UsageError, match="one split rule"):
        prepare([tmp_path / "c.jsonl"], tmp_path / "bad", val_fraction=0.1, val_inputs=[tmp_path / "held.txt"])


def test_rerun_without_val_removes_stale_val_split(tmp_path):
    make_jsonl(tmp_path / "c.jsonl", 10)
    prepare([tmp_path / "c.jsonl"], tmp_path / "out")
    assert (tmp_path / "out/val.bin").exists()
    prepare([tmp_path / "c.jsonl"], tmp_path / "out", val_fraction=0)
    assert not (tmp_path / "out/val.bin").exists() and not (tmp_path / "out/val.idx").exists()


def test_usage_mistakes_exit_2_with_one_line(tmp_path, capsys):
    (tmp_path / "a").write_bytes(b"A")
    for args in (
        ["--out", tmp_path / "o"],  # no inputs
        [tmp_path / "missing.txt", "--out", tmp_path / "o"],
        [tmp_path / "a", "--out", tmp_path / "o", "--separator", "256"],
        [tmp_path / "a", "--out", tmp_path / "o", "--separator", "nul"],
        [str(tmp_path / "*.nothing"), "--out", tmp_path / "o"],
        [tmp_path / "a", "--out", tmp_path / "o"],  # one document cannot be split
    ):
        code, captured = prepare_cli(capsys, *args)
        assert code == 2, args
        assert captured.err.count("\n") == 1 and captured.err.startswith("usage error"), captured.err
    assert not (tmp_path / "o" / "train.bin").exists()


def test_bad_record_exits_1_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "c.jsonl").write_text('{"text": "fine"}\n{"title": "no text"}\n')
    code, captured = prepare_cli(capsys, tmp_path / "c.jsonl", "--out", tmp_path / "o", "--val-fraction", "0")
    assert code == 1
    assert "c.jsonl:2" in captured.err and "--jsonl-field" in captured.err
    assert list((tmp_path / "o").iterdir()) == []


def test_unwritable_out_exits_1(tmp_path, capsys):
    (tmp_path / "a").write_bytes(b"A")
    (tmp_path / "taken").write_bytes(b"a file, not a directory")
    code, captured = prepare_cli(capsys, tmp_path / "a", "--out", tmp_path / "taken", "--val-fraction", "0")
    assert code == 1 and captured.err.startswith("error: ") and "taken" in captured.err


def test_truncated_gzip_is_a_clear_error(tmp_path):
    (tmp_path / "t.gz").write_bytes(gzip.compress(b"x" * 10_000)[:-20])
    with pytest.raises(CharLMError, match="cannot read .*t.gz"):
        prepare([tmp_path / "t.gz"], tmp_path / "o", val_fraction=0)


# ---------------------------------------------------------------- corrupt files


@pytest.fixture
def split_path(tmp_path):
    with SplitWriter(tmp_path / "s.bin") as w:
        for doc in (b"abc", b"defgh", b"", b"ij"):
            w.add([doc])
        w.commit()
    return tmp_path / "s.bin"


def test_open_split_checks_files(split_path):
    assert open_split(split_path).doc_count == 4
    split_path.with_suffix(".idx").unlink()
    with pytest.raises(CharLMError, match=r"s\.idx: no such file"):
        open_split(split_path)
    with pytest.raises(CharLMError, match=r"nothing\.bin: no such file"):
        open_split(split_path.with_name("nothing.bin"))


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda b, i: b.write_bytes(b.read_bytes()[:-1]), "truncated or mismatched"),
        (lambda b, i: i.write_bytes(i.read_bytes()[:-8]), "truncated or corrupted"),
        (lambda b, i: i.write_bytes(i.read_bytes()[:10]), "truncated"),
        (lambda b, i: i.write_bytes(b"NOTCHARL" + i.read_bytes()[8:]), "bad magic"),
        (lambda b, i: i.write_bytes(i.read_bytes()[:8] + struct.pack("<I", 99) + i.read_bytes()[12:]), "format version 99"),
        (lambda b, i: i.write_bytes(i.read_bytes()[: HEADER.size + 8] + struct.pack("<q", 100) + i.read_bytes()[HEADER.size + 16 :]), "offsets are corrupted"),
        (lambda b, i: b.write_bytes(b"X" * len(b.read_bytes())), "do not end where"),
    ],
    ids=["bin-truncated", "idx-truncated", "idx-header-truncated", "magic", "version", "offsets", "bin-swapped"],
)
def test_corrupt_pairs_are_rejected(split_path, corrupt, message):
    corrupt(split_path, split_path.with_suffix(".idx"))
    with pytest.raises(CharLMError, match=message):
        open_split(split_path)
