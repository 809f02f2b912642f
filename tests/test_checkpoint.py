"""Checkpoints: atomic writes, CRC-checked weights-only loads, retention, the newest good one."""

import pickle
import zipfile

import pytest
import torch

from charlm.checkpoint import load_checkpoint, newest_loadable_checkpoint, prune_checkpoints, save_checkpoint, step_path
from charlm.errors import CharLMError


def payload(value: float = 1.0) -> dict:
    return {"model": {"w": torch.full((64, 64), value)}, "step": 3, "config": {"seq_len": 8}, "rng": {"numpy": torch.arange(4)}}


def flip_a_weight_byte(path):
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if "/data/" in i.filename and i.file_size > 100)
    with open(path, "r+b") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = int.from_bytes(f.read(2), "little"), int.from_bytes(f.read(2), "little")
        data_start = info.header_offset + 30 + name_len + extra_len
        f.seek(data_start + info.file_size // 2)
        byte = f.read(1)[0]
        f.seek(data_start + info.file_size // 2)
        f.write(bytes([byte ^ 0x40]))


def test_round_trip(tmp_path):
    save_checkpoint(tmp_path / "c.pt", payload(2.0))
    loaded = load_checkpoint(tmp_path / "c.pt")
    assert loaded["step"] == 3 and torch.equal(loaded["model"]["w"], torch.full((64, 64), 2.0))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temporary file left


def test_a_flipped_byte_is_detected(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, payload())
    flip_a_weight_byte(path)
    with pytest.raises(CharLMError, match=r"checkpoint is corrupted \(CRC mismatch in .*data/"):
        load_checkpoint(path)


def test_truncated_and_foreign_files(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(path, payload())
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CharLMError, match="not a charlm checkpoint"):
        load_checkpoint(path)
    other = tmp_path / "other.pt"
    torch.save({"w": torch.ones(2)}, other)
    with pytest.raises(CharLMError, match="not a charlm checkpoint"):
        load_checkpoint(other)
    with pytest.raises(CharLMError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


class Payload:
    pass


def test_code_in_a_checkpoint_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "charlm-checkpoint", "format_version": 1, "model": Payload()}, path)
    with pytest.raises(CharLMError, match="refusing to load: it holds more than plain weights"):
        load_checkpoint(path)


def test_a_failed_save_keeps_the_previous_file(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, payload(1.0))
    with pytest.raises((pickle.PicklingError, AttributeError)):  # which one depends on the pickler
        save_checkpoint(path, {**payload(5.0), "bad": lambda: None})  # cannot be pickled
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.full((64, 64), 1.0))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_retention_and_newest_good(tmp_path):
    for step in (100, 200, 300, 400):
        save_checkpoint(step_path(tmp_path, step), {**payload(), "step": step})
    prune_checkpoints(tmp_path, keep_last=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000300.pt", "step-000400.pt"]
    save_checkpoint(tmp_path / "last.pt", {**payload(), "step": 400})
    path, loaded, failures = newest_loadable_checkpoint(tmp_path)
    assert (path.name, loaded["step"], failures) == ("last.pt", 400, [])
    flip_a_weight_byte(tmp_path / "last.pt")
    flip_a_weight_byte(tmp_path / "step-000400.pt")
    path, loaded, failures = newest_loadable_checkpoint(tmp_path)
    assert (path.name, loaded["step"]) == ("step-000300.pt", 300)
    assert [(p.name, "CRC mismatch" in why) for p, why in failures] == [("last.pt", True), ("step-000400.pt", True)]


def test_a_checkpoint_that_passes_the_zip_check_but_not_torch_load_is_passed_over(tmp_path):
    save_checkpoint(step_path(tmp_path, 1), {**payload(), "step": 1})
    save_checkpoint(tmp_path / "last.pt", {**payload(), "step": 2})
    with zipfile.ZipFile(tmp_path / "last.pt") as zf:  # rewritten below: a valid zip whose pickle is cut short
        entries = {n: zf.read(n) for n in zf.namelist()}
    data_pkl = next(n for n in entries if n.endswith("data.pkl"))
    entries[data_pkl] = entries[data_pkl][: len(entries[data_pkl]) // 2]
    with zipfile.ZipFile(tmp_path / "last.pt", "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    assert zipfile.ZipFile(tmp_path / "last.pt").testzip() is None
    path, loaded, failures = newest_loadable_checkpoint(tmp_path)
    assert (path.name, loaded["step"]) == ("step-000001.pt", 1)
    assert [p.name for p, _ in failures] == ["last.pt"] and "cannot load checkpoint" in failures[0][1]
