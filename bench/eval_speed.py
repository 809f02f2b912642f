"""Evaluation speed: bytes/s of ``evaluate_bpb`` (what ``charlm eval`` runs) per stride and batch size.

Scores the val split of charlm/recipes/micro.toml when it has been pulled, else random bytes, with a
checkpoint when one is given, else the micro shape with random weights (speed does not
depend on training). A smaller stride scores the same bytes with more overlap, so it costs
about ``seq_len / stride`` times more forward passes. Timings on a shared machine are noisy.

    python bench/eval_speed.py [--checkpoint C] [--data SPLIT.bin] [--max-bytes 65536]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from common import add_threads_flag, micro_model, use_threads  # bench/ is on sys.path when run as a script

from charlm.evaluate import evaluate_bpb
from charlm.generate import LanguageModel
from charlm.loading import load_model
from charlm.runners import ModelRunner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="a .pt checkpoint (default: random micro weights)")
    parser.add_argument("--data", help="a .bin split (default: the micro job's val split, else random bytes)")
    parser.add_argument("--max-bytes", type=int, default=65536)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    add_threads_flag(parser)
    args = parser.parse_args()
    use_threads(args.threads)

    if args.checkpoint:
        lm = load_model(args.checkpoint, "cpu")
    else:
        job, model = micro_model()
        lm = LanguageModel(ModelRunner(model, job))
    data = args.data or lm.config.data.val
    if data and Path(data).is_file():
        from charlm.data import open_split

        tokens, source = np.asarray(open_split(data).tokens[: args.max_bytes]), data
    else:
        tokens, source = np.random.default_rng(0).integers(0, 256, args.max_bytes).astype(np.uint8), "random bytes"
    seq_len = lm.runner.model.max_len
    print(f"model: {args.checkpoint or 'random micro weights'}; context {seq_len}; data: {source}, {len(tokens):,} bytes")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")

    evaluate_bpb(lm.runner.model, tokens[: 4 * seq_len], seq_len)  # warm-up
    header = f"{'stride':>6} {'batch':>5} {'bytes/s':>10} {'seconds':>8} {'bpb':>7}"
    print(header)
    print("-" * len(header))
    for stride in (seq_len, seq_len // 2, seq_len // 4):
        for batch in args.batch_sizes:
            r = evaluate_bpb(lm.runner.model, tokens, seq_len, stride=stride, batch_size=batch)
            print(f"{stride:>6} {batch:>5} {r.bytes_per_s:>10,.0f} {r.seconds:>8.2f} {r.bpb:>7.4f}", flush=True)


if __name__ == "__main__":
    main()
