"""One trial of the five-minute reference work (issue 9), recorded in bench/results/.

Trains ``charlm/recipes/micro.toml`` (plus overrides) for a wall-clock budget on this machine,
then scores the whole validation split with non-overlapping windows of the model's
context (what ``charlm eval --stride SEQ_LEN`` computes; the run's final eval does the
same). Each trial appends one JSON line: the overrides, val bits/byte, tokens/s, steps.

``--ood TEXT`` also scores the final model on a text kept out of training and validation (an
out-of-domain figure: e.g. a Project Gutenberg novel; the text is never copied into the
repository), with the same non-overlapping windows. ``--threads N`` sets the run's torch
threads (OMP_NUM_THREADS): on a machine shared with other jobs, fewer threads than cores
avoid threads spinning while they wait for a core.

    python bench/five_minute.py --name baseline
    python bench/five_minute.py --name lr4e-3 optimizer.lr=4e-3
    python bench/five_minute.py --name baseline-ood --ood pride_and_prejudice.txt --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from common import cpu_description  # bench/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "five_minute_trials.jsonl"


def ood_bpb(text: Path, out_dir: Path, env: dict | None) -> float:
    """Bits/byte of the run's final model on ``text`` (prepared in the run directory)."""
    data = out_dir / "ood"
    run = [sys.executable, "-m", "charlm"]
    subprocess.run([*run, "data", "prepare", text, "--out", data, "--val-fraction", "0"], check=True, capture_output=True, env=env)
    seq_len = tomllib.loads((out_dir / "config.toml").read_text())["seq_len"]  # non-overlapping windows, as for val
    cmd = [*run, "eval", "--checkpoint", out_dir / "checkpoints" / "last.pt", "--data", data / "train.bin",
           "--stride", str(seq_len), "--no-baselines", "--json"]  # fmt: skip
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return round(json.loads(done.stdout)["bpb"], 4)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides of the job")
    parser.add_argument("--name", required=True, help="the trial's name (its run directory under runs/trials/)")
    parser.add_argument("--config", default="charlm/recipes/micro.toml")
    parser.add_argument("--budget", default="300s", help="max_time of the run (default 300s)")
    parser.add_argument("--ood", type=Path, help="a text file to score out of domain after training")
    parser.add_argument("--threads", type=int, help="torch threads of the run (default: torch's choice)")
    parser.add_argument("--no-record", action="store_true", help="do not append to the results file")
    args = parser.parse_args()

    out_dir = ROOT / "runs" / "trials" / args.name
    if out_dir.exists():
        sys.exit(f"{out_dir} exists: pick another --name or remove it")
    if args.ood is not None and not args.ood.is_file():
        sys.exit(f"--ood: no such file: {args.ood}")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)} if args.threads else None
    load = os.getloadavg()[0]
    cmd = [sys.executable, "-m", "charlm", "run", args.config, f'max_time="{args.budget}"', f'out_dir="{out_dir}"', *args.overrides]
    started = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        print(proc.stdout[-2000:], proc.stderr[-2000:], sep="\n")
        return proc.returncode
    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    final = records[-1]
    assert final.get("split") == "full", "the run did not end with a full-split evaluation"
    trial = {
        "name": args.name,
        "config": args.config,
        "overrides": args.overrides,
        "budget": args.budget,
        "val_bpb": round(final["val_bpb"], 4),
        "val_bytes": final["val_bytes"],
        "steps": steps[-1]["step"],
        "tokens": steps[-1]["tokens"],
        "train_s": round(steps[-1]["elapsed_s"], 1),
        "tokens_per_s": round(steps[-1]["tokens"] / steps[-1]["elapsed_s"]),
        "final_train_loss": round(steps[-1]["loss"], 4),
        **({"ood_bpb": ood_bpb(args.ood, out_dir, env), "ood_text": args.ood.name} if args.ood else {}),
        "threads": args.threads,
        "wall_s": round(time.time() - started, 1),
        "load_before": round(load, 2),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "cpu": cpu_description(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    print(json.dumps(trial))
    if not args.no_record:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with open(RESULTS, "a") as f:
            f.write(json.dumps(trial) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
