"""Resuming: checkpoints in the version-1 layout resume exactly; other versions are refused by name."""

import json

import pytest
import torch
from helpers import charlm_main, make_job, metrics, train_losses, write_job

from charlm.checkpoint import FORMAT, load_checkpoint
from charlm.train import train
from charlm.train_state import PAYLOAD_KEYS

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
    job = trained(corpus, tmp_path)
    last = tmp_path / "run/checkpoints/last.pt"
    torch.save({**load_checkpoint(last), "format_version": 2}, tmp_path / "v2.pt")
    proc = charlm_main("run", str(job), "--resume", str(tmp_path / "v2.pt"), "--max-steps", "3")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'v2.pt'}: checkpoint format version 2 is not supported (this charlm reads version 1)"
    ]


def test_a_checkpoint_without_the_training_state_is_refused_naming_its_version(corpus, tmp_path):
    job = trained(corpus, tmp_path)
    payload = load_checkpoint(tmp_path / "run/checkpoints/last.pt")
    del payload["optimizer"], payload["rng"]
    torch.save(payload, tmp_path / "weights-only.pt")
    proc = charlm_main("run", str(job), "--resume", str(tmp_path / "weights-only.pt"), "--max-steps", "3")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, lines
    assert "checkpoint format version 1 lacks optimizer, rng: it cannot resume training" in lines[0]


# ---------------------------------------------------------------- what a resume may change


def trained(corpus, tmp_path, steps=2, **overrides):
    """A finished run of ``steps`` steps in tmp_path/run and its job file."""
    job = write_job(corpus, tmp_path, max_steps=steps, **{"logging.final_eval": "false", **overrides})
    proc = charlm_main("run", str(job))
    assert proc.returncode == 0, proc.stderr
    return job


@pytest.mark.parametrize(
    "args, keys",
    [
        (["optimizer.lr=0.01", "grad_clip=0.5", "seed=4"], "grad_clip, optimizer.lr, seed"),
        (["--precision", "bf16"], "precision"),
        (["data.train=VAL"], "data.train"),
        (['optimizer="muon"'], "optimizer.kind"),
    ],
)
def test_a_resume_that_would_change_the_run_is_refused_naming_the_keys(corpus, tmp_path, args, keys):
    job = trained(corpus, tmp_path)
    before = (tmp_path / "run/checkpoints/last.pt").read_bytes()
    args = [a.replace("VAL", str(corpus / "val.bin")) for a in args]
    proc = charlm_main("run", str(job), "--resume", "auto", "--max-steps", "4", *args)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"config error: {keys}: the job differs from the checkpoint it resumes"), lines[0]
    assert (tmp_path / "run/checkpoints/last.pt").read_bytes() == before


def test_safe_changes_resume_and_are_recorded(corpus, tmp_path):
    job = trained(corpus, tmp_path)
    proc = charlm_main("run", str(job), "--resume", "auto", "--max-steps", "4", "logging.log_every=2")
    assert proc.returncode == 0, proc.stderr
    log = (tmp_path / "run/train.log").read_text()
    assert "resume changes logging.log_every: 1 -> 2" in log and "resume changes max_steps: 2 -> 4" in log
    assert load_checkpoint(tmp_path / "run/checkpoints/last.pt")["config"]["max_steps"] == 4


# ---------------------------------------------------------------- damaged checkpoints


def test_resume_auto_falls_back_to_the_newest_checkpoint_that_loads(corpus, tmp_path):
    job = trained(corpus, tmp_path, steps=4, **{"checkpoint.every": 2})
    ckpts = tmp_path / "run/checkpoints"
    for name in ("last.pt", "step-000004.pt"):
        (ckpts / name).write_bytes((ckpts / name).read_bytes()[:-200])
    proc = charlm_main("run", str(job), "--resume", "auto", "--max-steps", "6")
    assert proc.returncode == 0, proc.stderr
    assert f"resumed from {ckpts / 'step-000002.pt'} at step 2" in proc.stdout
    log = (tmp_path / "run/train.log").read_text()
    assert "set aside as last.pt.damaged" in log and "set aside as step-000004.pt.damaged" in log
    assert [r["step"] for r in metrics(tmp_path / "run")] == [1, 2, 3, 4, 5, 6]
    assert load_checkpoint(ckpts / "last.pt")["step"] == 6


def test_only_damaged_checkpoints_refuse_to_start_again_unless_restart(corpus, tmp_path):
    job = trained(corpus, tmp_path, steps=2)
    ckpts = tmp_path / "run/checkpoints"
    for path in ckpts.iterdir():
        path.write_bytes(path.read_bytes()[:1000])
    proc = charlm_main("run", str(job), "--resume", "auto", "--max-steps", "3")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: no checkpoint in {ckpts} loads (") and lines[0].endswith("--resume auto --restart")
    assert [r["step"] for r in metrics(tmp_path / "run")] == [1, 2]

    proc = charlm_main("run", str(job), "--resume", "auto", "--restart", "--max-steps", "3")
    assert proc.returncode == 0, proc.stderr
    assert [r["step"] for r in metrics(tmp_path / "run")] == [1, 2, 3]
    assert sorted(p.name for p in ckpts.iterdir()) == ["last.pt", "last.pt.damaged", "step-000002.pt.damaged", "step-000003.pt"]


def test_restart_goes_with_resume_auto(corpus, tmp_path):
    proc = charlm_main("run", str(write_job(corpus, tmp_path)), "--restart")
    assert proc.returncode == 2 and proc.stderr.strip() == "usage error: --restart goes with --resume auto"


# ---------------------------------------------------------------- metrics history


def test_metrics_hold_each_step_once_after_a_crash_and_a_cut_line(corpus, tmp_path):
    job = trained(corpus, tmp_path, steps=5, **{"checkpoint.every": 3})
    ckpts = tmp_path / "run/checkpoints"
    (ckpts / "step-000005.pt").unlink()  # as if killed after logging step 5, before its checkpoint
    (ckpts / "last.pt").unlink()
    with open(tmp_path / "run/metrics.jsonl", "a") as f:
        f.write('{"step": 6, "lo')  # and killed in the middle of a line
    proc = charlm_main("run", str(job), "--resume", "auto", "--max-steps", "7")
    assert proc.returncode == 0, proc.stderr
    assert [r["step"] for r in metrics(tmp_path / "run")] == [1, 2, 3, 4, 5, 6, 7]


# ---------------------------------------------------------------- non-finite weights


def test_non_finite_weights_are_never_checkpointed(corpus, tmp_path):
    job = write_job(corpus, tmp_path, max_steps=5, grad_clip=0.0, **{"optimizer.lr": 1e39, "scheduler.warmup_steps": 0, "checkpoint.every": 1})
    proc = charlm_main("run", str(job))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    # step 1's loss is finite, its update is not: the weights it leaves are never written
    assert lines[0].startswith("error: non-finite weights after step 1; the last good checkpoint is kept"), lines[0]
    assert not (tmp_path / "run/checkpoints").exists()
