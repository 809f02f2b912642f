"""Batch-1 cached decode against its memory limit, for the micro recipe and the 10.7M shape.

A decode step reads every matmul weight once (the blocks' projections and the LM head; the
byte and n-gram tables only a row each) and the KV cache (counted full: the window's worst
case). The limit is those bytes / the memory bandwidth, measured as ``sum`` over a 1 GiB
tensor. The same weights' matrix-vector products run back to back, with nothing else, give
the step's matmul floor (weights this small may stay in cache, so the floor can beat the
DRAM limit); the rest of a step (step - floor) is per-step overhead: Python, dispatch,
norms, attention over the cache, small ops. Decode B/s is the end-to-end figure: sampling
at temperature 1 from an 8-byte prompt, windows re-encoded when full (``recompute``).

Weights are random (speed does not depend on them). Each figure is the best of ``--reps`` alternating
repetitions in one process (a repetition's floor and step are means over the same number of
steps): the best is the least disturbed by other work on a shared machine.

``--compile`` also times the compiled decode step (``charlm generate --compile``: the static
step of ``charlm.static_decode``, AOT-compiled, where it runs the model, else ``torch.compile``):
its step time, B/s, the compile time, and the bytes after which compiling pays back (compile
seconds / seconds saved per byte). ``--int8`` adds each shape exported int8 and loaded int8-resident
(rows "micro int8", "10.7M int8"): its decode steps read the int8 weights, 4x fewer bytes.

    python bench/decode_limit.py [--threads 1 2] [--reps 5] [--new 512] [--compile] [--int8]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from charlm.artifact import load_artifact
from charlm.builtin.export_formats import Int8Exporter
from charlm.builtin.exporters import Int8Options
from charlm.config import config_from_dict, load_config
from charlm.generate import Window, build_sampler, sample_tokens
from charlm.model import ByteLM
from charlm.quantize import Int8Linear
from charlm.runners import ModelRunner

MICRO = Path(__file__).resolve().parent.parent / "charlm" / "recipes" / "micro.toml"
SHAPE_10M = {"max_steps": 1, "seq_len": 256, "model": {"d_model": 384, "n_layer": 6, "n_head": 6}}
PROMPT = b"ROMEO.\n"
GIB = 1 << 30


def jobs() -> dict:
    return {"micro": load_config(MICRO, ['device="cpu"']), "10.7M": config_from_dict(SHAPE_10M)}


def matmul_layers(model: ByteLM) -> list[torch.nn.Module]:
    """Every Linear, float or int8-resident."""
    return [m for m in model.modules() if isinstance(m, (torch.nn.Linear, Int8Linear))]


def matmul_bytes(model: ByteLM) -> int:
    """What a decode step reads in full: every Linear's weight (int8 ones with their scales),
    and a tied head's table."""
    tensors = [t for m in matmul_layers(model) for t in ((m.qweight, m.scale) if isinstance(m, Int8Linear) else (m.weight,))]
    if model.head is None:
        tensors += [model.embed.weight] if isinstance(model.embed, torch.nn.Embedding) else [model.embed.qweight, model.embed.scale]
    return sum(t.numel() * t.element_size() for t in tensors)


def int8_resident(model: ByteLM, job) -> ByteLM:
    """The model exported by ``charlm export --format int8`` and loaded int8-resident, as
    ``charlm generate`` loads a large one."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.int8"
        Int8Exporter(Int8Options()).export(model, job, path)
        return load_artifact(path, resident="int8")[0]


def kv_bytes(job) -> int:
    m = job.model
    return m.n_layer * 2 * job.seq_len * m.kv_heads * m.head_dim * 4


def bandwidth() -> float:
    """Bytes/s of ``sum`` over 1 GiB (best of 3)."""
    big = torch.ones(GIB // 4)
    best = min(_seconds(big.sum) for _ in range(3))
    return GIB / best


def _seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def matmul_floor(model: ByteLM, steps: int) -> float:
    """Seconds for every Linear (and a tied head) applied to one row, back to back, mean over
    ``steps`` (measured as ``step_time`` is, so that their difference is the overhead)."""
    layers = matmul_layers(model)
    inputs = {m.in_features: torch.randn(1, 1, m.in_features) for m in layers}
    x = torch.randn(1, 1, model.cfg.d_model)
    t0 = time.perf_counter()
    for _ in range(steps):
        for m in layers:
            m(inputs[m.in_features])
        if model.head is None:
            x @ model.embed.weight.t()
    return (time.perf_counter() - t0) / steps


def step_time(runner: ModelRunner, steps: int) -> float:
    """Seconds per ``runner.step`` (the model alone, no sampling), mean over ``steps`` steps."""
    logits, state = runner.start(torch.zeros(1, 8, dtype=torch.long))
    token = torch.tensor([65])
    t0 = time.perf_counter()
    for _ in range(steps):
        logits, state = runner.step(token, state)
    return (time.perf_counter() - t0) / steps


def compiled_runner(model: ByteLM, job, new: int) -> tuple[ModelRunner, float]:
    """A runner with a compiled decode step, and the seconds its compile took (one short run)."""
    runner = ModelRunner(model, job)
    runner.compile()
    t0 = time.perf_counter()
    decode_rate(runner, min(new, 32), Window(job.seq_len))
    return runner, time.perf_counter() - t0


def ops_per_byte(runner: ModelRunner, steps: int = 10) -> float:
    """Top-level torch ops per sampled byte (sampler + step): the per-step overhead's driver,
    and a count that a crowded machine does not disturb."""
    sampler, generator = build_sampler(temperature=1.0), torch.Generator().manual_seed(0)
    logits, state = runner.start(torch.zeros(1, 8, dtype=torch.long))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            logits, state = runner.step(sampler(logits, generator), state)
    return sum(event.cpu_parent is None for event in prof.events()) / steps


def decode_rate(runner: ModelRunner, new: int, window: Window) -> float:
    """Bytes/s of cached sampling at batch 1, prefill and re-windows included."""
    sampler = build_sampler(temperature=1.0)
    generator = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for _ in sample_tokens(runner, PROMPT, new, sampler, window, generator):
        pass
    return new / (time.perf_counter() - t0)


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--new", type=int, default=512, help="bytes per decode run")
    parser.add_argument("--compile", action="store_true", help="also time a torch.compile'd decode step")
    parser.add_argument("--int8", action="store_true", help="also decode each shape from its int8 export, kept int8-resident")
    args = parser.parse_args()

    torch.manual_seed(0)
    models = {name: (job, ByteLM(job.model, job.seq_len).eval()) for name, job in jobs().items()}
    if args.int8:
        models |= {f"{name} int8": (job, int8_resident(model, job)) for name, (job, model) in models.items()}
    header = (
        f"{'shape':<10} {'thr':>3} {'params':>10} {'read/step':>9} {'DRAM':>8} {'limit':>7}"
        f" {'floor':>7} {'step':>7} {'overhd':>7} {'ops':>5} {'decode':>7} {'vs limit':>8}"
    )
    units = f"{'':<25} {'MB':>9} {'GB/s':>8} {'B/s':>7}" + f" {'ms':>7}" * 3 + f" {'/byte':>5} {'B/s':>7}"
    print(f"torch {torch.__version__}; best of {args.reps} alternating reps; decode: {args.new} bytes, temperature 1\n")
    if args.compile:
        header += f" {'c.step':>7} {'compiled':>8} {'c.vs lim':>8} {'compile':>7} {'pays after':>10}"
        units += f" {'ms':>7} {'B/s':>8} {'':>8} {'s':>7} {'bytes':>10}"
    print(header + "\n" + units + "\n" + "-" * len(header))
    for threads in args.threads:
        torch.set_num_threads(threads)
        best = {name: {"bw": 0.0, "floor": 1e9, "step": 1e9, "rate": 0.0, "c_step": 1e9, "compiled": 0.0} for name in models}
        compiled = {}
        if args.compile:  # compiled per thread count: the generated code is specialised to it
            torch._dynamo.reset()
            compiled = {name: compiled_runner(model, job, args.new) for name, (job, model) in models.items()}
        for _ in range(args.reps):  # alternate shapes and measures, keep each one's best
            for name, (job, model) in models.items():
                runner, b = ModelRunner(model, job), best[name]
                b["bw"] = max(b["bw"], bandwidth())
                steps = min(100, job.seq_len - 16)  # within one window
                b["floor"] = min(b["floor"], matmul_floor(model, steps))
                b["step"] = min(b["step"], step_time(runner, steps))
                b["rate"] = max(b["rate"], decode_rate(runner, args.new, Window(job.seq_len)))
                if name in compiled:
                    b["c_step"] = min(b["c_step"], step_time(compiled[name][0], steps))
                    b["compiled"] = max(b["compiled"], decode_rate(compiled[name][0], args.new, Window(job.seq_len)))
        for name, (job, model) in models.items():
            b = best[name]
            read = matmul_bytes(model) + kv_bytes(job)
            params = models[name.removesuffix(" int8")][1].num_parameters()  # an int8 model's weights are buffers
            limit = b["bw"] / read
            row = (
                f"{name:<10} {threads:>3} {params:>10,} {read / 1e6:>9.1f} {b['bw'] / 1e9:>8.1f}"
                f" {limit:>7,.0f} {1e3 * b['floor']:>7.2f} {1e3 * b['step']:>7.2f}"
                f" {1e3 * (b['step'] - b['floor']):>7.2f} {ops_per_byte(ModelRunner(model, job)):>5.0f}"
                f" {b['rate']:>7,.0f} {b['rate'] / limit:>7.2f}x"
            )
            if name in compiled:
                compile_s, saved = compiled[name][1], 1 / b["rate"] - 1 / b["compiled"]
                pays = f"{compile_s / saved:>10,.0f}" if saved > 0 else f"{'never':>10}"
                row += f" {1e3 * b['c_step']:>7.2f} {b['compiled']:>8,.0f} {b['compiled'] / limit:>7.2f}x {compile_s:>7.1f} {pays}"
            print(row, flush=True)
    print(
        "\nread/step: matmul weights + full KV cache; limit = DRAM / read; floor: the same matmuls alone;"
        "\noverhd = step - floor; ops: top-level torch ops per sampled byte; decode: end-to-end cached sampling; vs limit = decode / limit."
        + (
            "\nc.step, compiled: the compiled step and decode with it (c.vs lim: compiled / limit);"
            " pays after: compile s / (1/decode - 1/compiled)."
            if args.compile
            else ""
        )
    )


if __name__ == "__main__":
    main()
