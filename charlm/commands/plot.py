"""``charlm plot RUN_DIR -o curve.png``: train loss and validation bits/byte against time."""

import json
import math
from pathlib import Path

from charlm.errors import CharLMError, UsageError


def add_parser(sub):
    parser = sub.add_parser("plot", help="plot a run's loss and val bits/byte (needs matplotlib)")
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (each with metrics.jsonl)")
    parser.add_argument("-o", "--out", default="curve.png", help="output image (default curve.png)")
    parser.add_argument("--x", choices=["elapsed_s", "step", "tokens"], default="elapsed_s", help="x axis")
    parser.set_defaults(func=plot)


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise UsageError(f"{run_dir}: no metrics.jsonl (is it a run directory?)")
    records = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                raise CharLMError(f"{path}:{n}: not a JSON line") from None
    return records


def plot(args) -> int:
    try:
        from matplotlib.figure import Figure  # not pyplot: no global figure that a failed save would leave open
    except ImportError:
        raise UsageError("charlm plot needs matplotlib: pip install 'charlm-toolkit[plot]'") from None
    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    for run_dir in map(Path, args.run_dirs):
        records = [r for r in read_metrics(run_dir) if args.x in r]
        train = [(r[args.x], r["loss"] / math.log(2)) for r in records if "loss" in r]
        val = [(r[args.x], r["val_bpb"]) for r in records if "val_bpb" in r and r.get("split") != "full"]
        if train:
            ax.plot(*zip(*train), label=f"{run_dir.name} train", alpha=0.8)
        if val:
            ax.plot(*zip(*val), "o-", label=f"{run_dir.name} val")
    ax.set_xlabel({"elapsed_s": "training time (s)", "step": "step", "tokens": "bytes seen"}[args.x])
    ax.set_ylabel("bits per byte")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")
    return 0
