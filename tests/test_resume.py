"""Resuming: checkpoints in the version-1 layout resume exactly; other versions are refused by name."""

import json

import torch

from charlm.checkpoint import FORMAT, load_checkpoint
from charlm.train import train
from charlm.train_state import PAYLOAD_KEYS
from test_train import cli, corpus, make_job, metrics, train_losses, write_job  # noqa: F401  (corpus: a fixture)

# What `charlm run` has written since checkpoint format version 1 was released.
VERSION_1_KEYS = {"format", "format_version", "model", "optimizer", "step", "data", "elapsed_s", "tokens", "rng", "config", "versions"}
VERSION_1_RNG_KEYS = {"torch", "numpy", "numpy_pos", "python"}


def write_version_1(path, model, optimizer, step, data, elapsed_s, tokens, rng, config, versions):
    """A checkpoint written key by key as charlm's first checkpointing trainer wrote it."""
    torch.save(
        {
            "format": FORMAT,
            "format_version": 1,
            "model": model,
            "optimizer": optimizer,
            "step": step,
            "data": data,
            "elapsed_s": elapsed_s,
            "tokens": tokens,
            "rng": rng,
            "config": config,
            "versions": versions,
        },
        path,
    )


def test_the_payload_keeps_the_version_1_layout(corpus, tmp_path):
    train(make_job(corpus, tmp_path / "r", max_steps=2, **{"logging.final_eval": "false"}))
    payload = load_checkpoint(tmp_path / "r/checkpoints/last.pt")
    assert set(payload) == VERSION_1_KEYS == set(PAYLOAD_KEYS) | {"format", "format_version"}
    assert set(payload["rng"]) in (VERSION_1_RNG_KEYS, VERSION_1_RNG_KEYS | {"cuda"})
    assert payload["data"]["epoch"] == 0 and payload["data"]["batch"] == 2


def test_a_version_1_checkpoint_resumes_exactly(corpus, tmp_path):
    options = {"logging.final_eval": "false", "checkpoint.every": 10}
    train(make_job(corpus, tmp_path / "straight", max_steps=20, **options))
    train(make_job(corpus, tmp_path / "split", max_steps=20, **options))
    ckpts = tmp_path / "split/checkpoints"
    at_10 = load_checkpoint(ckpts / "step-000010.pt")
    for path in ckpts.iterdir():
        path.unlink()
    write_version_1(ckpts / "step-000010.pt", **{key: at_10[key] for key in PAYLOAD_KEYS})
    records = metrics(tmp_path / "split")[:10]
    (tmp_path / "split/metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))

    train(make_job(corpus, tmp_path / "split", max_steps=20, **options), resume="auto")
    assert train_losses(tmp_path / "split") == train_losses(tmp_path / "straight")
    a = load_checkpoint(tmp_path / "straight/checkpoints/last.pt")
    b = load_checkpoint(tmp_path / "split/checkpoints/last.pt")
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    assert (a["step"], a["tokens"], a["data"]) == (b["step"], b["tokens"], b["data"])


def test_another_format_version_is_refused_naming_it(corpus, tmp_path):
    job = write_job(corpus, tmp_path, max_steps=2, **{"logging.final_eval": "false"})
    assert cli("run", str(job)).returncode == 0
    last = tmp_path / "run/checkpoints/last.pt"
    torch.save({**load_checkpoint(last), "format_version": 2}, tmp_path / "v2.pt")
    proc = cli("run", str(job), "--resume", str(tmp_path / "v2.pt"), "--max-steps", "3")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'v2.pt'}: checkpoint format version 2 is not supported (this charlm reads version 1)"
    ]


def test_a_checkpoint_without_the_training_state_is_refused_naming_its_version(corpus, tmp_path):
    job = write_job(corpus, tmp_path, max_steps=2, **{"logging.final_eval": "false"})
    assert cli("run", str(job)).returncode == 0
    payload = load_checkpoint(tmp_path / "run/checkpoints/last.pt")
    del payload["optimizer"], payload["rng"]
    torch.save(payload, tmp_path / "weights-only.pt")
    proc = cli("run", str(job), "--resume", str(tmp_path / "weights-only.pt"), "--max-steps", "3")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, lines
    assert "checkpoint format version 1 lacks optimizer, rng: it cannot resume training" in lines[0]
