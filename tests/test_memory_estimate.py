"""Sizes that cannot fit fail at once with one line naming the key or flag, before allocating;
the real recipes fit."""

import pytest
from helpers import charlm_main, charlm_subprocess, write_job

from charlm import memory_estimate
from charlm.config import load_config
from charlm.recipes import lookup

HUGE = {
    "model.d_model": "1048576",
    "model.n_layer": "100000000",
    "micro_batch_size": "100000000",
    "seq_len": "1000000000",
    "model.ngram_buckets": "[16777216, 16777216, 16777216, 16777216, 16777216, 16777216, 16777216, 16777216]",
    "model.mlp.hidden": "10000000000",
}


@pytest.mark.parametrize("key", HUGE)
def test_config_validate_names_the_key_that_cannot_fit(key):
    ran = charlm_subprocess("config", "validate", "micro", f"{key}={HUGE[key]}", timeout=60)
    assert ran.returncode == 2
    assert ran.stderr.count("\n") == 1 and "Traceback" not in ran.stderr
    assert ran.stderr.startswith(f"config error: {key}: this job needs at least ")
    assert f"lower {key}" in ran.stderr


@pytest.mark.parametrize("recipe", ["micro", "small-50M"])
def test_the_real_recipes_fit_this_machine(recipe):
    assert charlm_main("config", "validate", recipe).returncode == 0


def test_small_50m_estimate_is_a_few_gib():
    """A floor, not a forecast: ~55M parameters with AdamW and bf16 activations of 32 x 512
    bytes need a few GiB, not tens (which would refuse it on a laptop)."""
    job = load_config(lookup("small-50M").path, ["device=\"cpu\""])
    total = sum(t.nbytes for t in memory_estimate._training_terms(job))
    assert 2 << 30 < total < 8 << 30


def test_split_ngram_tables_count_their_narrow_rows():
    """The recipe's four tables, split: each a quarter of d_model wide, so a quarter of the bytes."""
    sizes = {}
    for split in ("false", "true"):
        job = load_config(lookup("micro").path, ['device="cpu"', f"model.ngram_split={split}"])
        (term,) = [t for t in memory_estimate._training_terms(job) if t.key == "model.ngram_buckets"]
        sizes[split] = term.nbytes
    assert sizes["false"] == 4 * sizes["true"] > 0


def test_a_job_is_refused_where_the_device_is_too_small(monkeypatch, corpus, tmp_path):
    job = write_job(corpus, tmp_path)
    assert charlm_main("config", "validate", job).returncode == 0
    monkeypatch.setattr(memory_estimate, "_host_available", lambda: 64 << 10)
    ran = charlm_main("run", job)
    assert ran.returncode == 2
    assert "config error: " in ran.stderr and "but the host (available RAM) has 64.0 KiB" in ran.stderr
    assert not (tmp_path / "run").exists()  # refused before anything was built or written


def test_processes_on_one_host_share_its_memory(monkeypatch):
    monkeypatch.setattr(memory_estimate, "_host_available", lambda: 8 << 30)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert memory_estimate.available_bytes("cpu") == (2 << 30, "the host (available RAM per process)")


def test_generate_refuses_a_batch_of_samples_that_cannot_fit(checkpoint):
    ran = charlm_main("generate", "--checkpoint", checkpoint, "--device", "cpu", "--num-samples", str(2**40), "--max-new", "4", "--prompt", "a")
    assert ran.returncode == 2 and ran.stderr.count("\n") == 1
    assert ran.stderr.startswith("usage error: --num-samples: generation needs at least ")


def test_generate_refuses_samples_too_long_to_print_whole(checkpoint):
    ran = charlm_main("generate", "--checkpoint", checkpoint, "--device", "cpu", "--num-samples", "2", "--max-new", str(2**62), "--prompt", "a")
    assert ran.returncode == 2 and ran.stderr.startswith("usage error: --max-new: ")


def test_eval_refuses_a_batch_that_cannot_fit(monkeypatch, checkpoint, corpus):
    args = ("eval", "--checkpoint", checkpoint, "--data", corpus / "val.bin", "--device", "cpu", "--no-baselines")
    assert charlm_main(*args, "--batch-size", str(2**40)).returncode == 0  # a batch never holds more windows than there are
    monkeypatch.setattr(memory_estimate, "_host_available", lambda: 1 << 20)
    ran = charlm_main(*args, "--batch-size", "512")
    assert ran.returncode == 2 and ran.stderr.startswith("usage error: --batch-size: evaluation needs at least ")


def test_sizes_print_readably():
    assert memory_estimate.human(512) == "512 bytes"
    assert memory_estimate.human(3 << 30) == "3.0 GiB"
    assert memory_estimate.human(10**60) == "more than 10^30 bytes"
