"""Several processes (real torchrun or a hand launch, gloo on CPU): rank 0 alone judging the run directory,
per-step losses equal to one process, checkpoints that move between world sizes, exact sharded
evaluation, a signal to one rank, a rank that dies."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from charlm.checkpoint import load_checkpoint
from charlm.config import apply_overrides, config_from_dict, config_to_toml
from charlm.prepare import prepare
from charlm.train import train

ROOT = Path(__file__).resolve().parents[1]
WORDS = b"the king is dead long live the queen and all her men shall sing of love and war".split()
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
GLOBAL_BATCH = 2 * 8 * 32  # two micro-batches of 8 x 32 bytes: accumulation 2 on one process, 1 on two


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("dist-texts")
    gen = torch.Generator().manual_seed(0)
    for d in range(8):
        picks = torch.randint(len(WORDS), (2000,), generator=gen).tolist()
        (src / f"doc{d:02d}.txt").write_bytes(b" ".join(WORDS[i] for i in picks))
    out = tmp_path_factory.mktemp("dist-data")
    prepare([src], out, val_fraction=0.2, seed=0)
    return out


def job_dict(corpus: Path, out_dir: Path, **overrides) -> dict:
    raw = {
        "out_dir": str(out_dir),
        "seed": 3,
        "seq_len": 32,
        "micro_batch_size": 8,
        "batch_size_tokens": GLOBAL_BATCH,
        "max_steps": 8,
        "device": "cpu",
        "model": {"d_model": 32, "n_layer": 2, "n_head": 2, "n_kv_head": 1},
        "data": {"train": str(corpus / "train.bin"), "val": str(corpus / "val.bin")},
        "scheduler": {"kind": "cosine", "warmup_steps": 2},
        "logging": {"log_every": 1, "eval_every": 0, "final_eval": False},
        "checkpoint": {"every": 4, "keep_last": 10},
    }
    return apply_overrides(raw, [f"{k}={v}" for k, v in overrides.items()])


def write_job(corpus: Path, out_dir: Path, **overrides) -> Path:
    path = out_dir.parent / f"{out_dir.name}.toml"
    path.write_text(config_to_toml(config_from_dict(job_dict(corpus, out_dir, **overrides), world_size=1)))
    return path


def train_here(corpus: Path, out_dir: Path, resume: str | None = None, **overrides) -> None:
    """One process, in this one."""
    train(config_from_dict(job_dict(corpus, out_dir, **overrides), world_size=1), resume=resume)


def torchrun(*args: str, nproc: int = 2, timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", "charlm", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=ENV)


def launch_ranks(*args: str, world: int = 2, cwds: list[Path] | None = None) -> list[subprocess.Popen]:
    """The ranks of a job started by hand with torch.distributed's variables: each pid is ours to signal.
    ``cwds``: each rank's working directory (as on hosts that do not share one), else the repository."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    common = {**ENV, "WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    return [
        subprocess.Popen(
            [sys.executable, "-m", "charlm", *args], cwd=cwds[rank] if cwds else ROOT, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**common, "RANK": str(rank), "LOCAL_RANK": str(rank)},
        )
        for rank in range(world)
    ]


def losses(out_dir: Path) -> dict[int, float]:
    lines = (out_dir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines) if "loss" in r}


def assert_close(got: dict[int, float], want: dict[int, float], tol: float = 1e-5) -> None:
    assert got.keys() <= want.keys() and got
    worst = max(abs(got[s] - want[s]) for s in got)
    assert worst <= tol, f"losses differ by {worst:.2e}: {got} vs {want}"


def resume_copy(source: Path, step: int, dest: Path) -> None:
    """A new run directory whose only checkpoint is ``source``'s at ``step``."""
    (dest / "checkpoints").mkdir(parents=True)
    shutil.copy(source / f"checkpoints/step-{step:06d}.pt", dest / "checkpoints/last.pt")


def wait_for_step(out_dir: Path, step: int, procs: list[subprocess.Popen], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (out_dir / "metrics.jsonl").exists() and len(losses(out_dir)) >= step:
            return
        assert all(p.poll() is None for p in procs), "a rank ended before the signal"
        time.sleep(0.005)
    raise AssertionError(f"no step {step} within {timeout} s")


def test_rank_zero_alone_decides_whether_the_directory_holds_a_run(corpus, tmp_path):
    """A rank that looked at the run directory after rank 0 began to write it once refused the run
    as "already holds a run" and aborted the launch (1 launch in 12, at random). Here the race is
    made certain: the job's out_dir is relative and rank 1 starts in a directory where it already
    holds a run, rank 0 in an empty one. Rank 0's verdict must be the one every rank acts on."""
    job = tmp_path / "job.toml"
    raw = job_dict(corpus, Path("run"), max_steps=1, **{"checkpoint.every": 0})
    job.write_text(config_to_toml(config_from_dict(raw, world_size=1)))
    empty, held, fresh = (tmp_path / name for name in ("empty", "held", "fresh"))
    for path in (empty, held / "run", fresh):
        path.mkdir(parents=True)
    (held / "run/metrics.jsonl").write_text('{"step": 1, "loss": 5.0}\n')
    ranks = launch_ranks("run", str(job), cwds=[empty, held])
    outs = [p.communicate(timeout=240) for p in ranks]
    assert [p.returncode for p in ranks] == [0, 0], outs
    assert load_checkpoint(empty / "run/checkpoints/last.pt")["step"] == 1
    assert not (held / "run/checkpoints").exists()
    # and the other way: rank 0 sees a run, so both ranks stop with its message
    ranks = launch_ranks("run", str(job), cwds=[held, fresh])
    outs = [p.communicate(timeout=240) for p in ranks]
    assert [p.returncode for p in ranks] == [2, 2], outs
    assert all("already holds a run" in err for _, err in outs)


def test_ddp_steps_equal_one_process_and_checkpoints_move_between_world_sizes(corpus, tmp_path):
    train_here(corpus, tmp_path / "one")
    proc = torchrun("run", str(write_job(corpus, tmp_path / "two", **{"logging.final_eval": "true"})))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world size 2 | 0.03M parameters | grad accumulation 1" in proc.stdout
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert sorted(one) == sorted(two) == list(range(1, 9))
    assert_close(two, one)
    last = [json.loads(line) for line in (tmp_path / "two/metrics.jsonl").read_text().splitlines() if '"loss"' in line][-1]
    assert last["tokens"] == 8 * GLOBAL_BATCH

    # saved by two processes at step 4, continued by one; and the reverse
    resume_copy(tmp_path / "two", 4, tmp_path / "two_then_one")
    train_here(corpus, tmp_path / "two_then_one", resume="auto")
    assert_close(losses(tmp_path / "two_then_one"), one)
    assert sorted(losses(tmp_path / "two_then_one")) == [5, 6, 7, 8]
    resume_copy(tmp_path / "one", 4, tmp_path / "one_then_two")
    proc = torchrun("run", str(write_job(corpus, tmp_path / "one_then_two")), "--resume", "auto")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_close(losses(tmp_path / "one_then_two"), one)
    assert sorted(losses(tmp_path / "one_then_two")) == [5, 6, 7, 8]

    # exact sharded evaluation: `charlm eval` and the run's final figure, two ranks vs one process
    checkpoint = str(tmp_path / "two/checkpoints/last.pt")
    args = ("eval", "--checkpoint", checkpoint, "--data", str(corpus / "val.bin"), "--json", "--no-baselines")
    single = subprocess.run([sys.executable, "-m", "charlm", *args], capture_output=True, text=True, env=ENV)
    sharded = torchrun(*args)
    assert single.returncode == 0 and sharded.returncode == 0, single.stderr + sharded.stderr[-2000:]
    single_bpb = json.loads(single.stdout)["bpb"]
    (report,) = [json.loads(line) for line in sharded.stdout.splitlines() if line.startswith("{")]  # rank 0 only
    assert report["bytes_scored"] == json.loads(single.stdout)["bytes_scored"]
    assert abs(report["bpb"] - single_bpb) <= 1e-6 * single_bpb
    stride = [*args, "--stride", "32"]
    single_full = json.loads(subprocess.run([sys.executable, "-m", "charlm", *stride], capture_output=True, text=True, env=ENV).stdout)
    final = [json.loads(line) for line in (tmp_path / "two/metrics.jsonl").read_text().splitlines()][-1]
    assert final["split"] == "full" and abs(final["val_bpb"] - single_full["bpb"]) <= 1e-6 * single_full["bpb"]


def test_sigterm_to_one_rank_stops_all_at_one_step_and_resume_matches(corpus, tmp_path):
    steps = {"max_steps": 40, "checkpoint.every": 0}
    train_here(corpus, tmp_path / "whole", **steps)
    job = write_job(corpus, tmp_path / "cut", **steps)
    ranks = launch_ranks("run", str(job))
    wait_for_step(tmp_path / "cut", 2, ranks)
    ranks[1].send_signal(signal.SIGTERM)
    outs = [p.communicate(timeout=120) for p in ranks]
    assert [p.returncode for p in ranks] == [0, 0], outs
    stopped = load_checkpoint(tmp_path / "cut/checkpoints/last.pt")["step"]
    assert 2 <= stopped < 40
    assert f"stopped by another rank at step {stopped}" in outs[0][0]

    ranks = launch_ranks("run", str(job), "--resume", "auto")
    outs = [p.communicate(timeout=120) for p in ranks]
    assert [p.returncode for p in ranks] == [0, 0], outs
    assert sorted(losses(tmp_path / "cut")) == list(range(1, 41))
    assert_close(losses(tmp_path / "cut"), losses(tmp_path / "whole"))


def test_a_rank_that_dies_ends_the_others_with_one_line_within_the_timeout(corpus, tmp_path):
    job = write_job(corpus, tmp_path / "run", max_steps=100000, **{"distributed.timeout_s": 20})
    ranks = launch_ranks("run", str(job))
    wait_for_step(tmp_path / "run", 2, ranks)
    ranks[1].kill()
    t0 = time.monotonic()
    _, err = ranks[0].communicate(timeout=60)
    assert time.monotonic() - t0 < 20 + 10
    assert ranks[0].returncode == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: distributed:"), err[-3000:]
