"""``data.verify``: a run checks its splits against meta.json by size always, by sha256 when asked."""

import shutil

from helpers import charlm_main, write_job


def flipped_copy(corpus, tmp_path):
    """A copy of the corpus whose train.bin has one byte flipped: same size, other content."""
    data = tmp_path / "data"
    shutil.copytree(corpus, data)
    damaged = bytearray((data / "train.bin").read_bytes())
    damaged[len(damaged) // 2] ^= 0x01
    (data / "train.bin").write_bytes(bytes(damaged))
    return data


def test_sha256_verification_refuses_a_flipped_byte(corpus, tmp_path):
    job = write_job(flipped_copy(corpus, tmp_path), tmp_path, max_steps=1, **{"data.verify": '"sha256"'})
    ran = charlm_main("run", job)
    assert ran.returncode == 1 and ran.stderr.count("\n") == 1
    assert "train.bin: sha256 " in ran.stderr and "meta.json records" in ran.stderr


def test_size_verification_is_the_default_and_reads_no_content(corpus, tmp_path):
    job = write_job(flipped_copy(corpus, tmp_path), tmp_path, max_steps=1)
    assert charlm_main("run", job).returncode == 0  # the flip keeps the size: only sha256 sees it


def test_size_verification_refuses_a_truncated_split(corpus, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(corpus, data)
    job = write_job(data, tmp_path, max_steps=1)
    (data / "val.bin").write_bytes((data / "val.bin").read_bytes()[:-1])
    ran = charlm_main("run", job)
    assert ran.returncode == 1 and "val.bin: " in ran.stderr and "meta.json records" in ran.stderr


def test_an_unknown_verification_is_a_config_error(corpus, tmp_path):
    ran = charlm_main("config", "validate", write_job(corpus, tmp_path), 'data.verify="md5"')
    assert ran.returncode == 2 and ran.stderr.startswith("config error: data.verify: ")
