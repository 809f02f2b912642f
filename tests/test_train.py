"""Training: loss goes down, accumulation, exact resume, signals, non-finite losses (torchrun: test_distributed)."""

import importlib.util
import json
import math
import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers import ROOT, charlm_main, make_job, metrics, tiny_job, train_losses, write_job

from charlm.checkpoint import load_checkpoint
from charlm.config import config_from_dict, config_to_toml, resolve_precision
from charlm.train import Trainer, train


def test_short_run_lowers_the_loss_and_writes_the_run_dir(corpus, tmp_path):
    out = tmp_path / "run"
    result = train(make_job(corpus, out, max_steps=60, **{"logging.eval_every": 30}))
    records = metrics(out)
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 61))
    for field in ("step", "loss", "lr", "tokens_per_s", "elapsed_s"):
        assert all(field in r for r in steps)
    assert sum(r["loss"] for r in steps[-10:]) / 10 < sum(r["loss"] for r in steps[:10]) / 10 - 0.5
    assert [r["step"] for r in records if "val_bpb" in r and "split" not in r] == [30, 60]
    final = records[-1]
    assert final["split"] == "full" and math.isclose(final["val_bpb"], result["val_bpb"])
    assert final["val_bpb"] < 8.0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last.pt", "step-000060.pt"]
    assert (out / "config.toml").read_text() == config_to_toml(make_job(corpus, out, max_steps=60, **{"logging.eval_every": 30}))
    log = (out / "train.log").read_text()
    assert log.startswith("charlm ") and "torch" in log and "device cpu" in log and "d_model = 32" in log


def test_accumulation_matches_one_big_batch(corpus, tmp_path):
    big = train(make_job(corpus, tmp_path / "big", micro_batch_size=8, max_steps=3, **{"logging.final_eval": "false"}))
    small = train(
        make_job(corpus, tmp_path / "acc", micro_batch_size=2, batch_size_tokens=8 * 32, max_steps=3, **{"logging.final_eval": "false"})
    )
    assert big["step"] == small["step"] == 3
    assert train_losses(tmp_path / "big") == pytest.approx(train_losses(tmp_path / "acc"), rel=1e-5)
    a = load_checkpoint(tmp_path / "big/checkpoints/last.pt")["model"]
    b = load_checkpoint(tmp_path / "acc/checkpoints/last.pt")["model"]
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5)


# lazily updated n-gram tables: sparse gradients and SparseAdam's state resume exactly too
LAZY_NGRAM = {"model.ngram_buckets": "[64, 128]", "optimizer.kind": '"muon"', "optimizer.adamw.ngram_update": '"lazy"'}


@pytest.mark.parametrize("options", [{}, LAZY_NGRAM], ids=["default", "lazy-ngram"])
def test_resume_continues_exactly(corpus, tmp_path, options):
    options = {"logging.final_eval": "false", **options}
    train(make_job(corpus, tmp_path / "straight", max_steps=20, **options))
    train(make_job(corpus, tmp_path / "split", max_steps=20, **options, **{"checkpoint.every": 10}))
    # Cut the second run at step 10: drop what came after and resume from the step-10 checkpoint.
    ckpts = tmp_path / "split/checkpoints"
    (ckpts / "step-000020.pt").unlink()
    (ckpts / "last.pt").unlink()
    records = metrics(tmp_path / "split")[:10]
    (tmp_path / "split/metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    train(make_job(corpus, tmp_path / "split", max_steps=20, **options, **{"checkpoint.every": 10}), resume="auto")
    assert train_losses(tmp_path / "split") == train_losses(tmp_path / "straight")
    a = load_checkpoint(tmp_path / "straight/checkpoints/last.pt")
    b = load_checkpoint(tmp_path / "split/checkpoints/last.pt")
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    assert a["step"] == b["step"] == 20 and a["data"] == b["data"]
    assert torch.equal(torch.cat([x.flatten() for x in _tensors(a["optimizer"])]), torch.cat([x.flatten() for x in _tensors(b["optimizer"])]))


def _tensors(state) -> list:
    """Every tensor in an optimizer state dict, in order."""
    if isinstance(state, torch.Tensor):
        return [state]
    if isinstance(state, dict):
        return [t for key in sorted(state, key=str) for t in _tensors(state[key])]
    if isinstance(state, (list, tuple)):
        return [t for item in state for t in _tensors(item)]
    return []


def test_resume_rejects_a_different_model(corpus, tmp_path):
    from charlm.errors import ConfigError

    train(make_job(corpus, tmp_path / "r", max_steps=2, **{"logging.final_eval": "false"}))
    with pytest.raises(ConfigError, match="model: the job differs from the checkpoint"):
        train(make_job(corpus, tmp_path / "r", max_steps=4, **{"model.d_model": 64}), resume="auto")


def test_time_budget_ends_the_run(corpus, tmp_path):
    raw = tiny_job(corpus, tmp_path / "t", **{"logging.final_eval": "false", "scheduler.kind": '"wsd"'})
    del raw["max_steps"]
    raw["max_time"] = "2s"
    result = train(config_from_dict(raw, world_size=1))
    last = [r for r in metrics(tmp_path / "t") if "loss" in r][-1]
    assert result["step"] == last["step"] >= 1
    assert 2.0 <= last["elapsed_s"]  # ended by the clock, not by a step count


def test_muon_optimizer_trains(corpus, tmp_path):
    train(make_job(corpus, tmp_path / "m", max_steps=40, optimizer='"muon"', **{"logging.final_eval": "false"}))
    losses = train_losses(tmp_path / "m")
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(corpus, tmp_path):
    job = write_job(corpus, tmp_path, max_steps=50, grad_clip=0.0, **{"optimizer.lr": 1e30, "scheduler.warmup_steps": 0, "checkpoint.every": 1})
    proc = charlm_main("run", str(job))
    assert proc.returncode == 1
    message = proc.stderr.strip().splitlines()[-1]
    assert message.startswith(("error: non-finite loss", "error: non-finite gradient norm")), message
    bad_step = int(message.split("at step ")[1].split(";")[0])
    good = load_checkpoint(tmp_path / "run/checkpoints/last.pt")
    assert good["step"] == bad_step - 1
    assert all(torch.isfinite(t).all() for t in good["model"].values())


def test_non_finite_skip_goes_on(corpus, tmp_path):
    job = write_job(corpus, tmp_path, max_steps=6, grad_clip=0.0, on_nonfinite='"skip"', **{"optimizer.lr": 1e30, "scheduler.warmup_steps": 0, "logging.final_eval": "false"})
    proc = charlm_main("run", str(job))
    assert proc.returncode == 0, proc.stderr
    assert "update skipped" in proc.stdout
    assert load_checkpoint(tmp_path / "run/checkpoints/last.pt")["step"] == 6


def test_sigterm_checkpoints_and_resume_continues(corpus, tmp_path):
    job = write_job(corpus, tmp_path, max_steps=100000, **{"logging.final_eval": "false"})
    proc = subprocess.Popen([sys.executable, "-m", "charlm", "run", str(job)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics_file = tmp_path / "run/metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics_file.exists() and metrics_file.read_text().count("\n") >= 3):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "stopped by SIGTERM" in out
    stopped = load_checkpoint(tmp_path / "run/checkpoints/last.pt")["step"]
    assert 3 <= stopped < 100000
    proc = charlm_main("run", str(job), "--resume", "auto", "--max-steps", str(stopped + 3))
    assert proc.returncode == 0, proc.stderr
    assert "resumed from" in proc.stdout
    assert load_checkpoint(tmp_path / "run/checkpoints/last.pt")["step"] == stopped + 3


@pytest.mark.parametrize(
    "args, code, expected",
    [
        (["--precision", "fp16", "--device", "cpu"], 2, "config error: precision: fp16 needs a CUDA device"),
        (["--device", "cuda"], 2, "config error: device: 'cuda' is not available on this machine"),
        (["optimizer.fused=maybe"], 2, "config error: optimizer.fused:"),
        (["data.train=/nonexistent/train.bin"], 1, "error: /nonexistent/train.bin: no such file"),
        (["logging.wandb_project=demo"], 2, "config error: logging.wandb_project: wandb is not installed"),
    ],
)
def test_run_errors_are_one_line(corpus, tmp_path, args, code, expected):
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    if any(a.startswith("logging.wandb") for a in args) and importlib.util.find_spec("wandb"):
        pytest.skip("wandb is installed here")
    proc = charlm_main("run", str(write_job(corpus, tmp_path)), *args)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == code
    assert len(lines) == 1 and lines[0].startswith(expected), lines


def test_plot_draws_a_png(corpus, tmp_path):
    pytest.importorskip("matplotlib")
    train(make_job(corpus, tmp_path / "p", max_steps=5, **{"logging.final_eval": "false"}))
    proc = charlm_main("plot", str(tmp_path / "p"), "-o", str(tmp_path / "curve.png"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    missing = charlm_main("plot", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "no metrics.jsonl" in missing.stderr


def test_a_fresh_run_never_overwrites_an_old_one(corpus, tmp_path):
    from charlm.errors import UsageError

    train(make_job(corpus, tmp_path / "r", max_steps=2, **{"logging.final_eval": "false"}))
    before = (tmp_path / "r/metrics.jsonl").read_text()
    with pytest.raises(UsageError, match="already holds a run; continue it with --resume auto"):
        train(make_job(corpus, tmp_path / "r", max_steps=4))
    assert (tmp_path / "r/metrics.jsonl").read_text() == before


def test_bf16_autocast_trains_on_cpu(corpus, tmp_path):
    train(make_job(corpus, tmp_path / "bf16", max_steps=30, precision='"bf16"', **{"logging.final_eval": "false"}))
    losses = train_losses(tmp_path / "bf16")
    assert all(math.isfinite(x) for x in losses)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.3


@pytest.mark.parametrize(("amx", "avx512_bf16", "expected"), [(True, False, "bf16"), (False, True, "bf16"), (False, False, "fp32")])
def test_precision_auto_is_bf16_only_on_a_cpu_that_multiplies_bf16_natively(monkeypatch, amx, avx512_bf16, expected):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == expected
    assert [resolve_precision(name, cpu) for name in ("fp32", "bf16")] == ["fp32", "bf16"]  # named: kept
    assert resolve_precision("auto", torch.device("mps")) == "fp32"


def test_precision_auto_run_says_what_it_chose_trains_with_it_and_resumes(corpus, tmp_path):
    native = torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()
    probe = Trainer(make_job(corpus, tmp_path / "probe", max_steps=1, precision='"auto"'))
    assert probe.train_step.amp_dtype == (torch.bfloat16 if native else None)
    probe.close()
    out, options = tmp_path / "auto", {"precision": '"auto"', "logging.final_eval": "false", "logging.log_every": 1}
    train(make_job(corpus, out, max_steps=2, **options))
    train(make_job(corpus, out, max_steps=4, **options), resume="auto")  # the checkpoint's job says "auto" too
    assert [r["step"] for r in metrics(out) if "loss" in r] == [1, 2, 3, 4]
    chosen = "bf16" if native else "fp32"
    assert (out / "train.log").read_text().count(f"precision {chosen} (auto)") == 2
