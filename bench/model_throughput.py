"""Training throughput of the model: forward + backward bytes/s and MFU, fp32 vs bf16, eager vs compiled.

The shape is charlm/recipes/micro.toml's, with random weights and bytes: speed does not depend on training. One
step is a forward, a cross-entropy loss and a backward (no optimizer). MFU is against the
measured fp32 matmul peak of this machine (the fastest of a few 1024^2 matmuls), for both
precisions, so the rows compare directly. Compile time is reported apart from the steady
state. Rows are timed in alternating rounds and keep their best round; timings on a
shared machine are still noisy: compare rows from the same run.

    python bench/model_throughput.py [--seconds 8] [--rounds 4] [--no-compile] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from common import MICRO_NAME, add_threads_flag, micro_model, use_threads  # bench/ is on sys.path when run as a script

from charlm.model import ByteLM
from charlm.perf import measure_matmul_peak

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def build_step(job, precision: str, compiled: bool):
    """One training step's forward + backward at this precision; returns (step, bytes per step)."""
    torch.manual_seed(0)
    model = ByteLM(job.model, max_len=job.seq_len)
    step_model = torch.compile(model) if compiled else model
    batch = torch.randint(0, 256, (job.micro_batch_size, job.seq_len + 1))
    inputs, targets = batch[:, :-1], batch[:, 1:]
    dtype = PRECISIONS[precision]

    def step():
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            logits, _ = step_model(inputs)
        loss = F.cross_entropy(logits.reshape(-1, 256), targets.reshape(-1))
        loss.backward()
        model.zero_grad(set_to_none=True)

    return step, inputs.numel()


def timed(fn, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return time.perf_counter() - t0


def bytes_per_s(step, bytes_per_step: int, seconds: float) -> float:
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        steps += 1
    return steps * bytes_per_step / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="timed seconds per row (default 8)")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds per row, best kept (default 4)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    add_threads_flag(parser)
    args = parser.parse_args()
    use_threads(args.threads)

    job, model = micro_model()
    m = job.model
    print(
        f"shape: {MICRO_NAME}: {m.n_layer} layers, d_model {m.d_model}, {m.n_head} heads, {m.kv_heads} kv heads,"
        f" {m.block.kind}/{m.attention.kind}/{m.positional.kind}/{m.mlp.kind}/{m.norm.kind},"
        f" seq_len {job.seq_len}, micro-batch {job.micro_batch_size}"
    )
    print(
        f"parameters: {model.num_parameters():,} ({model.num_parameters(non_embedding=True):,} non-embedding);"
        f" {model.flops_per_byte(job.seq_len) / 1e6:.2f} MFLOP per byte (fwd+bwd)"
    )
    rows = [(p, c) for c in ([False] if args.no_compile else [False, True]) for p in PRECISIONS]
    steps, warmup = {}, {}
    for row in rows:
        step, bytes_per_step = build_step(job, *row)
        warmup[row] = timed(step, 3)  # compilation, allocator, thread pools
        steps[row] = step
    # Rounds alternate between the rows and each row keeps its best: other load on a shared
    # machine slows some rounds, never speeds one up. The peak is measured the same way.
    best = dict.fromkeys(rows, 0.0)
    peak = {torch.float32: 0.0, torch.bfloat16: 0.0}
    for _ in range(args.rounds):
        for row in rows:
            best[row] = max(best[row], bytes_per_s(steps[row], bytes_per_step, args.seconds / args.rounds))
        for dtype in peak:
            peak[dtype] = max(peak[dtype], measure_matmul_peak("cpu", dtype, seconds=0.2))

    print(
        f"matmul peak (1024^2): fp32 {peak[torch.float32] / 1e9:.1f} GFLOP/s, bf16 {peak[torch.bfloat16] / 1e9:.1f}"
        f" GFLOP/s; {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    print()
    print("| precision | compile | bytes/s | MFU (vs fp32 peak) | warm-up s (3 steps) |")
    print("|---|---|---|---|---|")
    for precision, compiled in rows:
        rate = best[(precision, compiled)]
        mfu = rate * model.flops_per_byte(job.seq_len) / peak[torch.float32]
        print(f"| {precision} | {'yes' if compiled else 'no'} | {rate:,.0f} | {100 * mfu:.1f} % | {warmup[(precision, compiled)]:.1f} |")


if __name__ == "__main__":
    main()
