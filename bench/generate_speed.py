"""Generation speed: bytes/s for 256, 1024 and 4096 new bytes, cached vs uncached, batch 1 and 8.

The model is the micro shape (charlm/recipes/micro.toml) with random weights: speed does not
depend on training.
"uncached" re-runs the full forward over the window for every byte; "compiled" is the
cached path with a ``torch.compile``d decode step (its compile time is reported apart).
The context window is the trained seq_len with the default ``recompute`` policy, so long
runs include the re-encodes. Timings on a shared machine are noisy.

    python bench/generate_speed.py [--lengths 256 1024 4096] [--batches 1 8] [--compile]
"""

from __future__ import annotations

import argparse
import time

import torch
from common import MICRO_NAME, add_threads_flag, micro_model, use_threads  # bench/ is on sys.path when run as a script

from charlm.generate import LanguageModel, build_sampler, sample_tokens
from charlm.runners import ModelRunner

PROMPT = b"ROMEO.\nBut soft, what light through yonder window breaks?\n"


def run(runner: ModelRunner, new: int, batch: int, cache: bool) -> float:
    """Seconds to generate ``new`` bytes for ``batch`` samples, prefill included."""
    window = LanguageModel(runner).window()
    sampler = build_sampler(temperature=1.0)
    generator = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for _ in sample_tokens(runner, PROMPT, new, sampler, window, generator, batch, cache):
        pass
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--compile", action="store_true", help="also time a torch.compile'd decode step")
    add_threads_flag(parser)
    args = parser.parse_args()
    use_threads(args.threads)

    job, model = micro_model()
    runner = ModelRunner(model, job)
    print(f"model: {MICRO_NAME}; {model.num_parameters():,} parameters; window {job.seq_len} bytes (recompute)")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")

    run(runner, 16, 1, True)  # warm-up: allocator, thread pools
    compiled = None
    if args.compile:
        compiled = ModelRunner(model, job)
        compiled.compile()
        t0 = time.perf_counter()
        for batch in args.batches:  # compile for every batch size and both cache layouts up front
            run(compiled, 2 * job.seq_len, batch, True)
        print(f"compile + first run: {time.perf_counter() - t0:.1f} s\n")

    modes = [("cached", runner, True), ("uncached", runner, False)]
    if compiled is not None:
        modes.insert(1, ("compiled", compiled, True))
    header = f"{'batch':>5} {'new bytes':>9} " + " ".join(f"{name + ' B/s':>14} {'ms/byte':>8}" for name, _, _ in modes)
    print(header)
    print("-" * len(header))
    for batch in args.batches:
        for new in args.lengths:
            cells = []
            for _, mode_runner, cache in modes:
                seconds = run(mode_runner, new, batch, cache)
                cells.append(f"{new * batch / seconds:>14,.0f} {1000 * seconds / new:>8.2f}")
            print(f"{batch:>5} {new:>9} " + " ".join(cells), flush=True)
    print("\nB/s counts the bytes of every sample; ms/byte is the time per decoding step (all samples).")


if __name__ == "__main__":
    main()
