"""`make bench`: the headline figures of CharLM on this machine, as one table (and JSON).

Each figure is the median of several runs with the spread (min-max) beside it; the runs
of different rows alternate, so a drifting machine shifts every row alike. The pieces come
from the single-topic benchmarks in this folder, which go deeper on each topic.

    python bench/run_all.py [--runs 3] [--no-compile] [--json bench/results/bench.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import data_throughput
import export_report
import generate_speed
import torch
import train_throughput
from common import add_threads_flag, micro_model, use_threads

from charlm.data import open_split
from charlm.evaluate import evaluate_bpb
from charlm.export import export
from charlm.perf import matmul_peak_flops
from charlm.runners import ModelRunner

ROOT = Path(__file__).resolve().parents[1]
VAL = ROOT / "data" / "shakespeare" / "val.bin"


class Table:
    def __init__(self):
        self.rows: list[dict] = []

    def add(self, what: str, unit: str, values: list[float], digits: int = 0) -> None:
        self.rows.append({"what": what, "unit": unit, "median": statistics.median(values), "min": min(values),
                          "max": max(values), "runs": values, "digits": digits})

    def print(self) -> None:
        print(f"\n{'figure':<46} {'median':>12} {'spread (min-max)':>22}  unit")
        for r in self.rows:
            d = r["digits"]
            spread = f"{r['min']:,.{d}f}-{r['max']:,.{d}f}"
            print(f"{r['what']:<46} {r['median']:>12,.{d}f} {spread:>22}  {r['unit']}")


def training(table: Table, runs: int, compile: bool) -> None:
    rows = [("fp32", False), ("bf16", False)] + ([("fp32", True), ("bf16", True)] if compile else [])
    results = train_throughput.run_rows(rows, steps=120, rounds=runs)
    for (precision, compiled), measured in results.items():
        name = f"train {precision}{' compiled' if compiled else ''}"
        table.add(f"{name}: tokens/s", "bytes/s", [m["tokens_per_s"] for m in measured])
        table.add(f"{name}: MFU", f"% of {precision} matmul peak", [100 * m["mfu"] for m in measured], 1)


def evaluation(table: Table, runs: int) -> None:
    job, model = micro_model()
    tokens = open_split(VAL).tokens[:65536] if VAL.is_file() else torch.randint(0, 256, (65536,), dtype=torch.uint8).numpy()
    evaluate_bpb(model, tokens[:4096], job.seq_len)  # warm-up
    table.add("eval (stride seq_len/2, 64 KiB)", "bytes/s",
              [evaluate_bpb(model, tokens, job.seq_len, batch_size=16).bytes_per_s for _ in range(runs)])


def generation(table: Table, runs: int) -> None:
    job, model = micro_model()
    runner = ModelRunner(model, job)
    generate_speed.run(runner, 32, 1, True)  # warm-up
    cases = [("cached, 256 new bytes", 256, True), ("cached, 4096 new bytes", 4096, True), ("uncached, 256 new bytes", 256, False)]
    rates: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    for _ in range(runs):
        for name, new, cache in cases:
            rates[name].append(new / generate_speed.run(runner, new, 1, cache))
    for name, _, _ in cases:
        table.add(f"generate batch 1, {name}", "bytes/s", rates[name])
    ratio = [a / b for a, b in zip(rates["cached, 256 new bytes"], rates["cached, 4096 new bytes"])]
    table.add("per-byte time at 4096 / at 256 (cached)", "x", ratio, 2)


def data_prepare(table: Table, runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        files, _ = data_throughput.make_corpus(Path(tmp), mb=50)
        rates = []
        for i in range(runs):
            mb, seconds = data_throughput.time_prepare([files], Path(tmp) / f"out{i}")
            rates.append(mb / seconds)
    table.add("data prepare (50 MB of text files)", "MB/s", rates)


def int8(table: Table, runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        args = SimpleNamespace(checkpoint=None, random=False, steps=200)
        checkpoint, _ = export_report.micro_checkpoint(work, args)
        reports = [export("int8", checkpoint, work / f"micro{i}.int8", data=str(VAL) if VAL.is_file() else None)
                   for i in range(runs)]
    table.add("int8 file / fp32 weights", "x", [r.metrics["size_ratio"] for r in reports], 3)
    table.add("int8 decode / fp32 decode (bytes/s)", "x", [r.metrics["decode_ratio"] for r in reports], 2)
    table.add("int8 bpb delta (gate <= 0.01)", "bits/byte", [r.metrics["bpb_delta"] for r in reports], 5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (default 3)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile training row")
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "bench.json"))
    add_threads_flag(parser)
    args = parser.parse_args()
    use_threads(args.threads)
    started = time.time()
    table = Table()
    for step in (lambda: training(table, args.runs, not args.no_compile), lambda: evaluation(table, args.runs),
                 lambda: generation(table, args.runs), lambda: data_prepare(table, args.runs), lambda: int8(table, args.runs)):
        step()
        print(f"  ... {table.rows[-1]['what']} done ({time.time() - started:.0f} s)", file=sys.stderr, flush=True)
    peak = matmul_peak_flops("cpu")
    print(f"charlm bench: torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}, "
          f"fp32 matmul peak {peak / 1e9:.0f} GFLOP/s, micro model (charlm/recipes/micro.toml), {args.runs} runs each")
    table.print()
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M"), "torch": str(torch.__version__),
                                           "threads": torch.get_num_threads(), "matmul_peak_flops": peak,
                                           "rows": table.rows}, indent=2) + "\n")
    print(f"\nwrote {args.json} ({time.time() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
