"""``make soak``: the reliability harness at scale, as a table.

    python bench/soak.py                 # >= 10,000 fuzz cases and 200 SIGKILLs
    python bench/soak.py --scale 0.1     # a tenth of that
    python bench/soak.py --seed 7        # other random cases (default: the fixed ones)

Prints one row per category: cases, clean successes, clean errors (one line, exit 1/2),
failures (traceback, hang, multi-line error, silent acceptance of damage), then the first
failures of each category. Exit 1 when anything failed.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "reliability"))
import harness  # noqa: E402

CASES = {"job file": 3000, "overrides": 3000, "split": 2000, "eval": 800, "generate": 800, "command line": 1500}
KILLS = 200


def fuzz(category: str, cases: int, work: Path, data: Path, checkpoint: Path, paths: dict, seed: int | None) -> harness.Tally:
    job = harness.write_job(work / "job.toml", harness.tiny_job(data, work / "run"))
    plans = {
        "job file": (harness.job_files(data, work / "run"), lambda text: harness.check_job_file(text, work / "fuzzed.toml")),
        "overrides": (harness.overrides, lambda case: harness.check_overrides(case, job)),
        "split": (harness.split_damage, lambda case: harness.check_open_split(case, work / "split", data)),
        "eval": (harness.split_damage, lambda case: harness.check_eval(case, work / "split", data, checkpoint)),
        "generate": (harness.generate_calls(checkpoint, work / "prompt"), harness.check_generate),
        "command line": (harness.command_lines(paths), harness.check_command_line),
    }
    strategy, check = plans[category]
    return harness.explore(category, strategy, check, cases, seed)


def crash(kills: int, data: Path, work: Path, seed: int | None) -> harness.Tally:
    """Crash injection in chains of 20 kills; a chain is a failure when it breaks any promise."""
    tally = harness.Tally("SIGKILL + resume")
    rng = random.Random(seed if seed is not None else 200)
    for chain in range((kills + 19) // 20):
        scratch = harness.scratch_dir(work)
        counts = harness.crash_injection(data, scratch, min(20, kills - 20 * chain), rng)
        broken = {k: counts[k] for k in ("corrupt", "leaked", "duplicated", "missing", "diverged", "errors") if counts[k]}
        tally.outcomes["success"] += counts["injections"] - (1 if broken else 0)
        if broken:
            tally.outcomes["failure"] += 1
            tally.failures.append(f"chain {chain}: {broken} (logs in {scratch})")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    return tally


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every count (default 1: >= 10,000 fuzz cases, 200 kills)")
    parser.add_argument("--seed", type=int, help="draw other random cases (default: the same cases every run)")
    parser.add_argument("--only", nargs="+", choices=[*CASES, "crash"], help="run only these categories")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="charlm-soak-"))
    os.chdir(work)  # a case's default output (plot's curve.png) lands in the scratch, not the checkout
    data = harness.prepare_corpus(work / "corpus")
    checkpoint = harness.tiny_checkpoint(data, work / "trained")
    scratch = work / "scratch"
    scratch.mkdir()
    paths = {
        "checkpoint": str(checkpoint), "data": str(data / "val.bin"), "idx": str(data / "val.idx"),
        "missing": str(scratch / "missing"), "dir": str(scratch), "out": str(scratch / "out.bin"),
        "job": str(work / "trained" / "config.toml"), "run": str(work / "trained"),
    }
    rows = []
    for category, cases in CASES.items():
        if args.only and category not in args.only:
            continue
        t0 = time.perf_counter()
        rows.append((fuzz(category, max(1, round(cases * args.scale)), work, data, checkpoint, paths, args.seed), time.perf_counter() - t0))
    if not args.only or "crash" in args.only:
        t0 = time.perf_counter()
        rows.append((crash(max(1, round(KILLS * args.scale)), data, work, args.seed), time.perf_counter() - t0))

    print(f"\n{'category':<18} {'cases':>7} {'clean ok':>9} {'clean error':>12} {'failures':>9} {'seconds':>8}")
    for tally, seconds in rows:
        o = tally.outcomes
        print(f"{tally.category:<18} {tally.cases:>7} {o['success']:>9} {o['error']:>12} {o['failure']:>9} {seconds:>8.1f}")
    total = sum(t.cases for t, _ in rows)
    failed = sum(t.outcomes["failure"] for t, _ in rows)
    print(f"{'total':<18} {total:>7} {'':>9} {'':>12} {failed:>9}")
    for tally, _ in rows:
        if tally.failures:
            print("\n" + tally.report())
    shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
