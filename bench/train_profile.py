"""Where each millisecond of a training step goes, at the micro recipe and at nanoGPT's CPU shape.

A step is cut into its phases (data, forward + loss, backward, the loss and gradient-norm
host syncs with clipping, each optimizer's step, zero_grad), each timed on its own over
``--steps`` steps after a warm-up; the table prints the median milliseconds per phase and
its share. "loop overhead" is the real ``Trainer.step`` (the loop ``charlm run`` runs, with
``logging.log_every = 1``) minus the phases' sum: scheduling, bookkeeping and logging. The
optimizer rows name what they update; with Muon, "muon" includes the Newton-Schulz iterations.

``--shape ngram`` times the n-gram tables' part alone at the micro recipe's sizes and batch:
backward into the tables, the optimizer step and zero_grad for a dense fused AdamW, for
``torch.optim.SparseAdam`` and for ``LazyAdam`` (``ngram_update = "lazy"``), alternating
round by round in one process, so that a machine whose speed drifts slows all three alike.

    python bench/train_profile.py [--shape micro|baby|both|ngram] [--steps 40] [--threads 1] [KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from common import add_threads_flag, micro_job, use_threads  # bench/ is on sys.path when run as a script

from charlm.builtin.lazy_adam import LazyAdam
from charlm.config import load_config
from charlm.train import Trainer
from charlm.train_step import clip_grad_norm

ROOT = Path(__file__).resolve().parents[1]
TRAIN_BIN = ROOT / "data" / "shakespeare" / "train.bin"
WARMUP_STEPS = 10

# nanoGPT's README CPU shape trained like for like (as bench/vs_nanogpt.py does)
BABY = """
seq_len = 64
micro_batch_size = 12
device = "cpu"
precision = "fp32"
compile = false
grad_clip = 1.0
[model]
d_model = 128
n_layer = 4
n_head = 4
positional = "learned"
mlp = "gelu"
norm = "layernorm"
tie_embeddings = true
attention = {kind = "gqa", qk_norm = false}
[optimizer]
kind = "adamw"
lr = 1e-3
betas = [0.9, 0.99]
weight_decay = 0.1
[scheduler]
kind = "cosine"
warmup_steps = 100
"""


def job_for(shape: str, work: Path, out: str, overrides: list[str]):
    common = [*overrides, f'out_dir="{work / out}"', f'data.train="{TRAIN_BIN}"', "logging.log_every=1", "logging.eval_every=0",
              "logging.final_eval=false", "checkpoint.every=0", "max_steps=1000000"]  # fmt: skip
    if shape == "micro":
        return micro_job(*common)
    path = work / "baby.toml"
    path.write_text(BABY, encoding="utf-8")
    return load_config(path, common)


OPTIMIZER_ROWS = {"muon": "optimizer: muon (incl. Newton-Schulz)", "adamw": "optimizer: adamw", "ngram": "optimizer: n-gram rows (LazyAdam)"}


def optimizer_parts(optimizer) -> dict:
    """The optimizers stepped one after the other (an ``OptimizerChain``'s, or AdamW alone)."""
    chain = getattr(optimizer, "optimizers", {"adamw": optimizer})
    return {OPTIMIZER_ROWS[name]: opt for name, opt in chain.items()}


def phase_times(trainer: Trainer, steps: int) -> dict[str, list[float]]:
    """Seconds of each phase of ``steps`` steps, written out as ``TrainStep`` runs them (no accumulation, no fp16 scaler)."""
    ts, model = trainer.train_step, trainer.model
    parts = optimizer_parts(trainer.optimizer)
    times: dict[str, list[float]] = {}

    def timed(name, fn, *args):
        t0 = time.perf_counter()
        result = fn(*args)
        times.setdefault(name, []).append(time.perf_counter() - t0)
        return result

    def forward(x, y):
        with ts.autocast():
            logits, _ = ts.forward(x)
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1))

    def host_syncs(loss):
        return loss.item(), clip_grad_norm(model.parameters(), 1.0).item()

    for _ in range(steps):
        x, y = timed("data", next, trainer.batches)
        loss = timed("forward + loss", forward, x, y)
        timed("backward", loss.backward)
        timed("clip + host syncs", host_syncs, loss)
        for name, opt in parts.items():
            timed(name, opt.step)
        timed("zero_grad", trainer.optimizer.zero_grad, True)
    return times


def loop_times(trainer: Trainer, steps: int) -> list[float]:
    """Seconds per step of the real loop: step, validation check, logging, checkpoint check."""
    out = []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss, grad_norm = trainer.step()
        trainer.maybe_log(loss, grad_norm, trainer.maybe_validate())
        trainer.maybe_checkpoint()
        out.append(time.perf_counter() - t0)
    return out


def profile(shape: str, steps: int, work: Path, overrides: list[str]) -> None:
    job = job_for(shape, work, f"run-{shape}", overrides)
    with contextlib.redirect_stdout(io.StringIO()):
        trainer = Trainer(job)
        trainer.start()
        try:
            phase_times(trainer, WARMUP_STEPS)
            phases = phase_times(trainer, steps)
            loop = loop_times(trainer, steps)
        finally:
            trainer.close()
    ms = {name: statistics.median(t) * 1e3 for name, t in phases.items()}
    step_ms = statistics.median(loop) * 1e3
    ms["loop overhead (schedule, logging, bookkeeping)"] = max(step_ms - sum(ms.values()), 0.0)
    tokens = job.micro_batch_size * job.seq_len
    flops = trainer.model.flops_per_byte(job.seq_len) * tokens
    peak = trainer.peak_flops
    n_ngram = sum(p.numel() for p in trainer.model.ngram.parameters()) if trainer.model.ngram is not None else 0
    print(f"\n{shape}: batch {job.micro_batch_size} x context {job.seq_len}, {trainer.model.num_parameters():,} parameters "
          f"({n_ngram:,} in n-gram tables), optimizer {job.optimizer.kind}, {steps} steps after {WARMUP_STEPS} warm-up")
    print(f"{'phase':<50} {'ms/step':>9} {'share':>7}")
    for name, value in ms.items():
        print(f"{name:<50} {value:>9.2f} {value / step_ms:>6.1%}")
    print(f"{'real loop step (median)':<50} {step_ms:>9.2f}")
    print(f"tokens/s {tokens / step_ms * 1e3:,.0f} | MFU {flops / (step_ms / 1e3) / peak:.1%} of the measured {job.precision} matmul peak "
          f"{peak / 1e9:.0f} GFLOP/s")


def ngram_update_times(steps: int) -> None:
    """Backward, step and zero_grad of the micro recipe's n-gram tables under three optimizers."""
    job = micro_job()
    tokens = job.micro_batch_size * job.seq_len
    rows = job.model.ngram_buckets
    builders = {
        "dense fused AdamW": lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.0, fused=True),
        "SparseAdam": lambda ps: torch.optim.SparseAdam(ps, lr=1e-2),
        "LazyAdam": lambda ps: LazyAdam(ps, lr=1e-2),
    }
    setups = {}
    for name, build in builders.items():
        tables = [torch.nn.Embedding(n, job.model.d_model, sparse=name != "dense fused AdamW") for n in rows]
        setups[name] = (tables, build([t.weight for t in tables]))
    times: dict[str, list[tuple[float, float, float]]] = {name: [] for name in setups}
    for _ in range(WARMUP_STEPS // 2 + steps):
        idx = [torch.randint(0, n, (tokens,)) for n in rows]
        for name, (tables, opt) in setups.items():
            out = sum(t(i).sum() for t, i in zip(tables, idx))
            t0 = time.perf_counter()
            out.backward()
            t1 = time.perf_counter()
            opt.step()
            t2 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            times[name].append((t1 - t0, t2 - t1, time.perf_counter() - t2))
    print(f"\nn-gram tables {rows} x {job.model.d_model}, {tokens} lookups each per step, {steps} alternating rounds")
    print(f"{'optimizer':<20} {'backward ms':>12} {'step ms':>9} {'zero_grad ms':>13} {'total ms':>9}")
    for name, rounds in times.items():
        med = [statistics.median(r[k] for r in rounds[WARMUP_STEPS // 2 :]) * 1e3 for k in range(3)]
        print(f"{name:<20} {med[0]:>12.1f} {med[1]:>9.1f} {med[2]:>13.1f} {sum(med):>9.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help='dotted key=value overrides of both jobs, e.g. optimizer.adamw.ngram_update="lazy"')
    parser.add_argument("--shape", choices=["micro", "baby", "both", "ngram"], default="both")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per part (after the warm-up)")
    add_threads_flag(parser)
    args = parser.parse_args()
    use_threads(args.threads)
    if args.shape == "ngram":
        return ngram_update_times(args.steps)
    if not TRAIN_BIN.is_file():
        raise SystemExit(f"no {TRAIN_BIN}: run `make data-pull` first")
    with tempfile.TemporaryDirectory(prefix="train_profile_") as scratch:
        for shape in ("micro", "baby") if args.shape == "both" else (args.shape,):
            profile(shape, args.steps, Path(scratch), args.overrides)


if __name__ == "__main__":
    main()
