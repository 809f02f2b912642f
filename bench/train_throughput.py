"""Training-loop throughput: tokens/s and MFU of `charlm run` itself (data, forward, backward,
clipping, optimizer step, logging), for the micro job in fp32 and bf16, eager and with torch.compile.

MFU is against this CPU's measured matmul peak in the run's precision (charlm.perf). The first steps (and
compilation) are left out of the rate and reported as warm-up. Rows alternate over rounds
and the median is printed with the spread, since a shared machine drifts.

    python bench/train_throughput.py [--steps 150] [--rounds 3] [--no-compile]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch
from common import MICRO, add_threads_flag, micro_job, use_threads  # bench/ is on sys.path when run as a script

from charlm.data import SplitWriter
from charlm.perf import matmul_peak_flops
from charlm.train import Trainer

ROOT = Path(__file__).resolve().parents[1]
WARMUP_STEPS = 20


def train_split(work: Path) -> Path:
    """The micro job's training split when pulled, else 4 MB of random text (speed only)."""
    real = ROOT / "data" / "shakespeare" / "train.bin"
    if real.is_file():
        return real
    path = work / "train.bin"
    with SplitWriter(path) as writer:
        writer.add([np.random.default_rng(0).integers(32, 127, 4_000_000, dtype=np.uint8).tobytes()])
        writer.commit()
    return path


def measure(train_bin: Path, work: Path, precision: str, compile: bool, steps: int) -> dict:
    """Run the training loop for ``steps`` steps; tokens/s after the warm-up steps."""
    out = work / f"run-{precision}-{compile}"
    overrides = [
        f'out_dir="{out}"', f'data.train="{train_bin}"', f'precision="{precision}"',
        f"compile={str(compile).lower()}", f"max_steps={steps}", "logging.log_every=1",
        "logging.eval_every=0", "logging.final_eval=false", "checkpoint.every=0",
    ]
    job = micro_job(*overrides)
    with contextlib.redirect_stdout(io.StringIO()):
        trainer = Trainer(job)
        try:
            trainer.run()
        finally:
            trainer.close()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    warm, last = records[WARMUP_STEPS - 1], records[-1]
    tok_s = (last["tokens"] - warm["tokens"]) / (last["elapsed_s"] - warm["elapsed_s"])
    flops = trainer.model.flops_per_byte(job.seq_len)
    return {"tokens_per_s": tok_s, "mfu": tok_s * flops / matmul_peak_flops("cpu"), "warmup_s": warm["elapsed_s"]}


def run_rows(rows: list[tuple[str, bool]], steps: int, rounds: int) -> dict[tuple[str, bool], list[dict]]:
    results: dict[tuple[str, bool], list[dict]] = {row: [] for row in rows}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train_bin = train_split(work)
        for r in range(rounds):
            for row in rows:
                round_dir = work / f"round{r}"
                round_dir.mkdir(exist_ok=True)
                results[row].append(measure(train_bin, round_dir, *row, steps))
    return results


def spread(values: list[float]) -> str:
    return f"{min(values):,.0f}-{max(values):,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150, help="steps per run (the first 20 are warm-up)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true")
    add_threads_flag(parser)
    args = parser.parse_args()
    use_threads(args.threads)
    rows = [("fp32", False), ("bf16", False)] + ([] if args.no_compile else [("fp32", True), ("bf16", True)])
    results = run_rows(rows, args.steps, args.rounds)
    print(f"micro job ({MICRO.name}), {torch.get_num_threads()} threads, matmul peak fp32 {matmul_peak_flops('cpu') / 1e9:.0f}, bf16 {matmul_peak_flops('cpu', torch.bfloat16) / 1e9:.0f} GFLOP/s")
    print(f"{'precision':<9} {'compile':<7} {'tokens/s (median)':>17} {'spread':>15} {'MFU':>6} {'warm-up s':>9}")
    for (precision, compiled), runs in results.items():
        tok = [r["tokens_per_s"] for r in runs]
        print(
            f"{precision:<9} {str(compiled).lower():<7} {statistics.median(tok):>17,.0f} {spread(tok):>15}"
            f" {100 * statistics.median(r['mfu'] for r in runs):>5.1f}% {statistics.median(r['warmup_s'] for r in runs):>9.1f}"
        )


if __name__ == "__main__":
    main()
