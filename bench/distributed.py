"""Data-parallel overhead: tokens/s and time per step of `charlm run` on one process and on two
(DDP over gloo, launched by torchrun) for the same job and the same global batch.

Rows: one process with one thread, one process with all the cores' threads, and two processes
with one thread each. The overhead of data parallelism (the gradient all-reduce and the
per-step collectives) is the two-process step time minus half the one-thread step time
(perfect scaling). On a machine shared with other work the thread rows are noisy: say so.
Rates are medians over the steps after the first ``--warmup``; rows alternate over rounds.

    python bench/distributed.py [--steps 60] [--rounds 2] [--d-model 128] [--n-layer 4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from charlm.config import config_from_dict, config_to_toml
from charlm.data import SplitWriter

ROOT = Path(__file__).resolve().parents[1]


def write_split(path: Path, n_bytes: int = 2_000_000) -> None:
    """Random printable bytes: speed does not depend on the text."""
    rng = np.random.default_rng(0)
    with SplitWriter(path) as writer:
        writer.add([rng.integers(32, 127, n_bytes, dtype=np.uint8).tobytes()])
        writer.commit()


def run_job(work: Path, name: str, args, nproc: int, threads: int) -> dict:
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
        },
        world_size=1,
    )
    path = work / f"{name}.toml"
    path.write_text(config_to_toml(job))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    launcher = [sys.executable, "-m", "charlm"] if nproc == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", "charlm"
    ]
    subprocess.run([*launcher, "run", str(path)], cwd=ROOT, env=env, check=True, capture_output=True)
    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    steady = [r for r in records if "loss" in r and r["step"] > args.warmup]
    step_s = statistics.median(b["elapsed_s"] - a["elapsed_s"] for a, b in zip(steady, steady[1:]))
    return {"tokens_per_s": statistics.median(r["tokens_per_s"] for r in steady), "step_ms": 1000 * step_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--n-layer", type=int, default=4)
    args = parser.parse_args()
    shapes = [(1, 1), (1, os.cpu_count()), (2, 1)]  # (processes, threads each)
    rows = {shape: [] for shape in shapes}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_split(work / "train.bin")
        for r in range(args.rounds):
            for nproc, threads in shapes:
                rows[nproc, threads].append(run_job(work, f"p{nproc}t{threads}-{r}", args, nproc, threads))
    one_thread = statistics.median(x["step_ms"] for x in rows[1, 1])
    print(f"DDP overhead, d_model {args.d_model} x {args.n_layer} layers, seq 128, global batch 32 x 128 bytes, "
          f"{os.cpu_count()} cores, median of {args.rounds} rounds")
    print("| processes | threads each | tokens/s | ms/step | ms/step over perfect scaling of 1 x 1 thread |")
    print("|---:|---:|---:|---:|---:|")
    for (nproc, threads), runs in rows.items():
        tok = statistics.median(x["tokens_per_s"] for x in runs)
        ms = statistics.median(x["step_ms"] for x in runs)
        over = f"{ms - one_thread / nproc:+.1f}" if threads == 1 else "-"
        print(f"| {nproc} | {threads} | {tok:,.0f} | {ms:.1f} | {over} |")

if __name__ == "__main__":
    main()
