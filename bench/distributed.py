"""Data-parallel overhead and memory: tokens/s and time per step of `charlm run` on one process
and on two (DDP and FSDP over gloo, launched by torchrun) for the same job and global batch;
then the memory each rank holds for the `small-50M` model under DDP and FSDP.

Speed rows: one process with one thread, one process with all the cores' threads, and two
processes with one thread each, DDP and FSDP. The overhead of a strategy (its collectives) is
the two-process step time minus half the one-thread step time (perfect scaling). On a machine
shared with other work the rows are noisy: say so. Rates are medians over the steps after the
first ``--warmup``; rows alternate over rounds.

Memory rows: `small-50M` (fp32, a short context: the weights and optimizer state do not depend
on it) trained ``--memory-steps`` steps by two processes; each rank reports the bytes of its
parameters and optimizer state (its shards under FSDP) and its resident set, after the steps
and at its peak (which includes the whole model every rank builds before it is sharded).

    python bench/distributed.py [--steps 60] [--rounds 2] [--d-model 128] [--n-layer 4] [--memory-steps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from charlm.config import apply_overrides, config_from_dict, config_to_toml, read_config_file
from charlm.data import SplitWriter

ROOT = Path(__file__).resolve().parents[1]


def write_split(path: Path, n_bytes: int = 2_000_000) -> None:
    """Random printable bytes: speed does not depend on the text."""
    rng = np.random.default_rng(0)
    with SplitWriter(path) as writer:
        writer.add([rng.integers(32, 127, n_bytes, dtype=np.uint8).tobytes()])
        writer.commit()


def launcher(nproc: int) -> list[str]:
    if nproc == 1:
        return [sys.executable]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]


def run_job(work: Path, name: str, args, nproc: int, threads: int, strategy: str) -> dict:
    out_dir = work / name
    seq_len, micro = 128, 16
    job = config_from_dict(
        {
            "out_dir": str(out_dir),
            "seq_len": seq_len,
            "micro_batch_size": micro,
            "batch_size_tokens": 2 * micro * seq_len,  # two micro-batches per step for either world size
            "max_steps": args.steps,
            "device": "cpu",
            "model": {"d_model": args.d_model, "n_layer": args.n_layer, "n_head": 4},
            "data": {"train": str(work / "train.bin")},
            "logging": {"log_every": 1, "final_eval": False},
            "checkpoint": {"every": 0},
            "distributed": {"strategy": strategy},
        },
        world_size=1,
    )
    path = work / f"{name}.toml"
    path.write_text(config_to_toml(job))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run([*launcher(nproc), "-m", "charlm", "run", str(path)], cwd=ROOT, env=env, check=True, capture_output=True)
    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    steady = [r for r in records if "loss" in r and r["step"] > args.warmup]
    step_s = statistics.median(b["elapsed_s"] - a["elapsed_s"] for a, b in zip(steady, steady[1:]))
    return {"tokens_per_s": statistics.median(r["tokens_per_s"] for r in steady), "step_ms": 1000 * step_s}


def memory_worker(job_path: str) -> None:
    """One rank under torchrun: train a few steps with the real Trainer, print what this rank holds."""
    from charlm.config import load_config
    from charlm.fsdp import local, torch_optimizers
    from charlm.train import Trainer

    trainer = Trainer(load_config(job_path))
    trainer.start()
    for _ in range(trainer.job.max_steps):
        trainer.step()
    params = sum(local(p).numel() * p.element_size() for p in trainer.model.parameters())
    optim = sum(
        local(t).numel() * t.element_size()
        for inner in torch_optimizers(trainer.optimizer)
        for state in inner.state.values()
        for t in state.values()
        if isinstance(t, torch.Tensor)
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    now = int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    print(json.dumps({"rank": trainer.dist.rank, "params": params, "optimizer": optim, "rss": now, "peak_rss": peak}), flush=True)
    import torch.distributed as dist

    dist.barrier()
    trainer.close()


def memory_rows(work: Path, steps: int) -> dict[str, list[dict]]:
    rows = {}
    for strategy in ("ddp", "fsdp"):
        overrides = [
            f"out_dir={work / ('mem-' + strategy)}", f"data.train={work / 'train.bin'}", "data.num_workers=0",
            "device=cpu", "precision=fp32", "compile=false", "seq_len=128", "micro_batch_size=2", "batch_size_tokens=512",
            f"max_steps={steps}", "logging.final_eval=false", "logging.eval_every=0", f"distributed.strategy={strategy}",
        ]
        raw = apply_overrides(read_config_file(ROOT / "charlm/recipes/small-50M.toml"), overrides)
        del raw["data"]["val"]  # no validation: only the training step's memory counts
        job = config_from_dict(raw, world_size=2)
        path = work / f"mem-{strategy}.toml"
        path.write_text(config_to_toml(job))
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        cmd = [*launcher(2), str(Path(__file__).resolve()), "--memory-worker", str(path)]
        out = subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout
        rows[strategy] = sorted((json.loads(line) for line in out.splitlines() if line.startswith("{")), key=lambda r: r["rank"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--memory-steps", type=int, default=3)
    parser.add_argument("--memory-worker", help=argparse.SUPPRESS)  # one rank of the memory rows
    args = parser.parse_args()
    if args.memory_worker:
        return memory_worker(args.memory_worker)
    shapes = [(1, 1, "ddp"), (1, os.cpu_count(), "ddp"), (2, 1, "ddp"), (2, 1, "fsdp")]  # (processes, threads each, strategy)
    rows = {shape: [] for shape in shapes}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_split(work / "train.bin")
        for r in range(args.rounds):
            for nproc, threads, strategy in shapes:
                rows[nproc, threads, strategy].append(run_job(work, f"p{nproc}t{threads}{strategy}-{r}", args, nproc, threads, strategy))
        memory = memory_rows(work, args.memory_steps)
    one_thread = statistics.median(x["step_ms"] for x in rows[1, 1, "ddp"])
    print(f"d_model {args.d_model} x {args.n_layer} layers, seq 128, global batch 32 x 128 bytes, "
          f"{os.cpu_count()} cores, median of {args.rounds} rounds")
    print("| processes | strategy | threads each | tokens/s | ms/step | ms/step over perfect scaling of 1 x 1 thread |")
    print("|---:|---|---:|---:|---:|---:|")
    for (nproc, threads, strategy), runs in rows.items():
        tok = statistics.median(x["tokens_per_s"] for x in runs)
        ms = statistics.median(x["step_ms"] for x in runs)
        over = f"{ms - one_thread / nproc:+.1f}" if threads == 1 else "-"
        print(f"| {nproc} | {strategy if nproc > 1 else '-'} | {threads} | {tok:,.0f} | {ms:.1f} | {over} |")
    print()
    print(f"small-50M (fp32, AdamW), 2 processes, {args.memory_steps} steps: what each rank holds, MiB")
    print("| strategy | rank | parameters | optimizer state | parameters + optimizer | RSS after the steps | peak RSS |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    mib = 1 << 20
    for strategy, ranks in memory.items():
        for r in ranks:
            both = r["params"] + r["optimizer"]
            print(f"| {strategy} | {r['rank']} | {r['params'] / mib:,.1f} | {r['optimizer'] / mib:,.1f} | {both / mib:,.1f} | {r['rss'] / mib:,.0f} | {r['peak_rss'] / mib:,.0f} |")


if __name__ == "__main__":
    main()
