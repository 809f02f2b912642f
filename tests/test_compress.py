"""charlm compress / decompress: exact round trips, and every bad file refused with one line and no output."""

import hashlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import model_job

from charlm.adapt import AdaptOptions
from charlm.checkpoint import save_checkpoint
from charlm.cli import main
from charlm.compress import compress, decompress, read_header
from charlm.config import to_dict
from charlm.errors import CharLMError
from charlm.mixer import MixOptions
from charlm.model import ByteLM

SEQ_LEN = 32
ADAPT = AdaptOptions(lr=1e-2, window=16)
MIX = MixOptions(orders="1+2+4", slot_bits=12)
CODINGS = {"static": (None, None), "adaptive": (ADAPT, None), "static+mix": (None, MIX), "adaptive+mix": (ADAPT, MIX)}
MODEL_SHA = hashlib.sha256(b"tiny").digest()


@pytest.fixture(scope="module")
def job():
    return model_job(SEQ_LEN, ngram_buckets=[64, 64])


@pytest.fixture(scope="module")
def lm(job):
    torch.manual_seed(0)
    return ByteLM(job.model, job.seq_len).eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, lm, job):
    path = tmp_path_factory.mktemp("ck") / "ck.pt"
    save_checkpoint(path, {"model": lm.state_dict(), "config": to_dict(job)})
    return path


def english(n):
    words = b"the king doth wake tonight and takes his rouse , keeps wassail and the swaggering upspring reels".split()
    rng = np.random.default_rng(0)
    return b" ".join(words[i] for i in rng.integers(0, len(words), n // 4))[:n]


INPUTS = {
    "empty": b"",
    "one-byte": b"x",
    "random": np.random.default_rng(1).integers(0, 256, 3000).astype(np.uint8).tobytes(),
    "invalid-utf8": b"\xff\xfe\xc3(\xa0\xa1\xe2\x28\xa1" * 50,
}


@pytest.mark.parametrize("coding", list(CODINGS))
@pytest.mark.parametrize("name", list(INPUTS))
def test_round_trip(lm, name, coding):
    data = INPUTS[name]
    adapt, mix = CODINGS[coding]
    blob = compress(lm, data, MODEL_SHA, adapt, window=16, segments=4, mix=mix)
    assert decompress(lm, blob, MODEL_SHA) == data


def test_round_trip_one_megabyte_adaptive(lm):
    """1 MiB in 256 rows (fewer rows: minutes per side for this tiny model on 2 shared cores). Adaptive only:
    the static coder runs the same rows without the updates, and test_round_trip covers it (37 s less here)."""
    data = english(1 << 20)
    blob = compress(lm, data, MODEL_SHA, AdaptOptions(lr=1e-2, window=32), window=32, segments=256)
    assert decompress(lm, blob, MODEL_SHA) == data


def test_round_trip_long_text_adaptive_and_mixed(lm):
    data = english(64 * 1024)
    blob = compress(lm, data, MODEL_SHA, ADAPT, segments=64, mix=MIX)
    assert decompress(lm, blob, MODEL_SHA) == data
    assert len(blob) < len(data) / 4


def test_same_input_same_file_and_adaptation_pays(lm):
    data = english(6000)
    static = compress(lm, data, MODEL_SHA, None, window=16)
    adaptive = compress(lm, data, MODEL_SHA, ADAPT)
    assert compress(lm, data, MODEL_SHA, ADAPT) == adaptive
    assert len(adaptive) < 0.8 * len(static)


def test_mixing_pays_and_the_header_says_how_to_decode(lm):
    """The decoder mixes as the header says: another mix setting, or none, decodes too."""
    data = english(6000)
    plain = compress(lm, data, MODEL_SHA, None, window=16)
    other = MixOptions(orders="2+3", slot_bits=10, alpha=0.5, lr=0.01)
    sizes = {}
    for mix in (MIX, other):
        blob = compress(lm, data, MODEL_SHA, None, window=16, mix=mix)
        assert read_header(blob, MODEL_SHA)[2]["mix"] == mix.to_dict()
        assert decompress(lm, blob, MODEL_SHA) == data
        sizes[mix.orders] = len(blob)
    assert read_header(plain, MODEL_SHA)[2]["mix"] is None
    assert max(sizes.values()) < 0.8 * len(plain) and sizes[MIX.orders] != sizes[other.orders]


def test_bad_files_are_refused(lm):
    data = english(3000)
    blob = compress(lm, data, MODEL_SHA, ADAPT, segments=2)
    wrong_length = bytearray(blob)
    wrong_length[42:50] = (len(data) - 1).to_bytes(8, "little")
    flipped = bytearray(blob)
    flipped[len(blob) - 20] ^= 0x10
    cases = {
        "another checkpoint": (blob, hashlib.sha256(b"other").digest()),
        "truncated": (blob[:-3], MODEL_SHA),
        "truncated header": (blob[:30], MODEL_SHA),
        "sha256": (bytes(wrong_length), MODEL_SHA),
        "sha256 ": (bytes(flipped), MODEL_SHA),
        "not a charlm": (b"hello" * 20, MODEL_SHA),
    }
    for message, (bad, sha) in cases.items():
        with pytest.raises(CharLMError, match=message.strip()):
            decompress(lm, bad, sha)


def test_cli_round_trip_in_a_subprocess(tmp_path, checkpoint):
    source = tmp_path / "in.txt"
    source.write_bytes(english(5000))
    packed, restored = tmp_path / "in.cz", tmp_path / "out.txt"
    run = [sys.executable, "-m", "charlm"]
    done = subprocess.run([*run, "compress", source, packed, "--checkpoint", checkpoint, "--adapt", "window=16",
                           "--threads", "1"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([*run, "decompress", packed, restored, "--checkpoint", checkpoint], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert restored.read_bytes() == source.read_bytes()


def test_cli_failures_are_one_line_and_leave_no_output(tmp_path, checkpoint, job, capsys):
    source = tmp_path / "in.txt"
    source.write_bytes(english(500))
    packed = tmp_path / "in.cz"
    assert main(["compress", str(source), str(packed), "--checkpoint", str(checkpoint), "--no-adapt", "--window", "16"]) == 0
    other = tmp_path / "other.pt"
    torch.manual_seed(1)
    save_checkpoint(other, {"model": ByteLM(job.model, SEQ_LEN).state_dict(), "config": to_dict(job)})
    corrupt = tmp_path / "corrupt.cz"
    blob = bytearray(packed.read_bytes())
    blob[-5] ^= 0x01
    corrupt.write_bytes(bytes(blob))
    restored = tmp_path / "restored.txt"
    for argv, code, message in [
        (["decompress", str(packed), str(restored), "--checkpoint", str(other)], 1, "another checkpoint"),
        (["decompress", str(corrupt), str(restored), "--checkpoint", str(checkpoint)], 1, "sha256"),
        (["decompress", str(source), str(restored), "--checkpoint", str(checkpoint)], 1, "not a charlm"),
        (["decompress", str(tmp_path / "nope"), str(restored), "--checkpoint", str(checkpoint)], 1, "cannot read"),
        (["compress", str(source), str(packed), "--checkpoint", str(checkpoint), "--adapt", "lr=x"], 2, "lr"),
    ]:
        capsys.readouterr()
        assert main(argv) == code
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
        assert not restored.exists()
        assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
