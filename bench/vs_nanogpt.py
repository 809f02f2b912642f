"""CharLM beside nanoGPT: training tokens/s and sampling bytes/s, each side run from its own code.

nanoGPT comes from a checkout the user supplies (nothing of it is copied here). Both sides get
their data from one text file: nanoGPT's own ``data/shakespeare_char/prepare.py`` encodes it
(characters), ``charlm data prepare`` stores its bytes. nanoGPT's scripts read ``configurator.py``
and ``data/`` relative to the working directory, so they run in a scratch directory whose
scripts are links into the checkout.

Training, at nanoGPT's README CPU shape (4 layers, n_embd 128, 4 heads, block 64, batch 12,
AdamW, dropout 0, no compile, fp32): CharLM trains the same shape like for like, i.e. AdamW,
full multi-head attention without QK-norm, learned absolute positions, LayerNorm, a 4x GELU
MLP, tied embeddings, no n-gram tables (differences left: 256 bytes vs nanoGPT's 65
characters, no biases). Each side's per-iteration times (nanoGPT's ``iter N: ... time Yms``
lines, CharLM's ``tokens_per_s`` records in metrics.jsonl, both logged every step) after the
first ``--skip`` steps give its median tokens/s. ``--bf16`` adds a third side, CharLM under
bfloat16 autocast (``precision = "bf16"``; its matmuls then use the CPU's bf16 units where it
has them, e.g. AMX). nanoGPT has no such option on a CPU: its train.py runs fp32 there
whatever its ``dtype``. ``--compile`` adds both sides ``torch.compile``d (nanoGPT's
``compile=True``, CharLM's ``compile = true``; the compile falls in the skipped first steps).

Sampling, batch 1, at that shape and at the 10.7M shape (6 layers, n_embd 384, 6 heads,
block 256): nanoGPT's ``sample.py`` (re-runs the whole context per byte) against ``charlm
generate`` (KV cache), temperature 0.8, top-k 200; and ``charlm generate`` on each checkpoint's
int8 export (``charlm export --format int8``: the 10.7M model is loaded int8-resident, so its
decode steps read int8 weights). Each side runs twice, for few and for many bytes: the
difference of the wall times cancels start-up and loading. With ``--compile``, ``charlm
generate --compile`` samples too (the AOT-compiled decode step); its build time varies by
seconds, so its difference is of the seconds after the first byte that ``--timings``
reports. Checkpoints: the trained one at the CPU shape; at 10.7M, one after a single step
(speed does not depend on the weights).

Runs alternate (nanoGPT, CharLM, nanoGPT, ...) so a busy machine slows both alike.

    python bench/vs_nanogpt.py PATH_TO_NANOGPT --text input.txt [--steps 200] [--rounds 2] [--bf16] [--compile]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NANO_CPU = {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64}
SHAPES = {"nanoGPT CPU": NANO_CPU, "10.7M": {"n_layer": 6, "n_head": 6, "n_embd": 384, "block_size": 256}}
BATCH = 12
ITER_LINE = re.compile(r"^iter (\d+): loss [-\d.naif]+, time ([\d.]+)ms", re.M)
TIMINGS_LINE = re.compile(r"^timings: .* new bytes in ([\d.]+) s, the first after ([\d.]+) s", re.M)


def run(cmd: list, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(map(str, cmd))}\n{done.stderr[-2000:]}")
    return done


# ---------------------------------------------------------------- nanoGPT


class NanoGPT:
    def __init__(self, checkout: Path, python: str, work: Path, text: Path):
        self.python, self.dir = python, work / "nanogpt"
        data = self.dir / "data" / "shakespeare_char"
        data.mkdir(parents=True)
        for name in ("train.py", "sample.py", "model.py", "configurator.py", "config"):
            (self.dir / name).symlink_to(checkout / name)
        (data / "prepare.py").symlink_to(checkout / "data" / "shakespeare_char" / "prepare.py")
        (data / "input.txt").symlink_to(text)
        run([python, "data/shakespeare_char/prepare.py"], self.dir)

    def train(self, shape: dict, steps: int, out: str, compile: bool = False) -> list[float]:
        """Seconds of each iteration; a checkpoint in ``out`` after ``steps`` steps."""
        flags = {**shape, "batch_size": BATCH, "device": "cpu", "compile": compile, "dtype": "float32",
                 "dropout": 0.0, "max_iters": steps, "lr_decay_iters": steps, "eval_interval": steps,
                 "eval_iters": 1, "log_interval": 1, "out_dir": out}  # fmt: skip
        stdout = run([self.python, "train.py", "config/train_shakespeare_char.py", *_flags(flags)], self.dir).stdout
        return [float(ms) / 1000 for _, ms in ITER_LINE.findall(stdout)]

    def sample(self, out: str, new: int) -> float:
        flags = {"out_dir": out, "device": "cpu", "dtype": "float32", "compile": False, "num_samples": 1,
                 "max_new_tokens": new, "temperature": 0.8, "top_k": 200}  # fmt: skip
        return _timed([self.python, "sample.py", *_flags(flags)], self.dir)


def _flags(values: dict) -> list[str]:
    return [f"--{key}={value}" for key, value in values.items()]


# ---------------------------------------------------------------- CharLM


class CharLM:
    def __init__(self, python: str, work: Path, text: Path):
        self.python, self.dir = python, work / "charlm"
        self.dir.mkdir()
        prepare = [python, "-m", "charlm", "data", "prepare", text, "--out", self.dir / "data", "--val-fraction", "0"]
        run(prepare, self.dir)

    def job(self, shape: dict, steps: int, out: str, precision: str, compile: bool) -> Path:
        """nanoGPT's model and optimizer, like for like (see the module docstring)."""
        path = self.dir / f"{out}.toml"
        path.write_text(
            f'out_dir = "{out}"\nseq_len = {shape["block_size"]}\nmicro_batch_size = {BATCH}\n'
            f'max_steps = {steps}\ndevice = "cpu"\nprecision = "{precision}"\ncompile = {str(compile).lower()}\n'
            "grad_clip = 1.0\n"
            f'[model]\nd_model = {shape["n_embd"]}\nn_layer = {shape["n_layer"]}\nn_head = {shape["n_head"]}\n'
            'positional = "learned"\nmlp = "gelu"\nnorm = "layernorm"\ntie_embeddings = true\n'
            'attention = {kind = "gqa", qk_norm = false}\n'
            '[data]\ntrain = "data/train.bin"\n'
            '[optimizer]\nkind = "adamw"\nlr = 1e-3\nbetas = [0.9, 0.99]\nweight_decay = 0.1\n'
            '[scheduler]\nkind = "cosine"\nwarmup_steps = 100\n'
            "[logging]\nlog_every = 1\nfinal_eval = false\n"
        )
        return path

    def train(self, shape: dict, steps: int, out: str, precision: str = "fp32", compile: bool = False) -> list[float]:
        """Seconds of each step (from its tokens/s); a checkpoint in ``out``."""
        run([self.python, "-m", "charlm", "run", self.job(shape, steps, out, precision, compile), "--no-val"], self.dir)
        records = [json.loads(line) for line in (self.dir / out / "metrics.jsonl").read_text().splitlines()]
        return [BATCH * shape["block_size"] / r["tokens_per_s"] for r in records if "tokens_per_s" in r]

    def export_int8(self, out: str) -> str:
        """The checkpoint in ``out`` exported int8 (validated on random bytes); its path."""
        run([self.python, "-m", "charlm", "export", "--format", "int8", "--checkpoint", out, "--out", f"{out}.int8"], self.dir)
        return f"{out}.int8"

    def sample(self, out: str, new: int, compile: bool = False) -> float:
        """Seconds to sample ``new`` bytes: the run's wall time, or compiled, the seconds after the
        first byte that ``--timings`` reports (the build, 20-30 s give or take seconds, comes before
        it and would drown the difference)."""
        cmd = [self.python, "-m", "charlm", "generate", "--checkpoint", out, "--max-new", new, "--prompt", "\n",
               "--temperature", 0.8, "--top-k", 200, "--compile" if compile else "--no-compile", "--device", "cpu"]  # fmt: skip
        if not compile:
            return _timed(cmd, self.dir)
        timings = TIMINGS_LINE.search(run([*cmd, "--timings"], self.dir).stderr)
        return float(timings[1]) - float(timings[2])


# (row label, nanoGPT variant, CharLM variant): each CharLM variant against nanoGPT's like it
TRAIN_ROWS = [
    ("fp32", "nanoGPT", "CharLM"),
    ("CharLM bf16", "nanoGPT", "CharLM bf16"),
    ("both compiled, fp32", "nanoGPT compiled", "CharLM compiled"),
    ("both compiled, CharLM bf16", "nanoGPT compiled", "CharLM bf16 compiled"),
]


def training_variants(bf16: bool, compile: bool) -> dict[str, tuple[str, dict]]:
    """Each training run's name: (side, its options), in the order runs alternate."""
    variants = {"nanoGPT": ("nanoGPT", {}), "CharLM": ("CharLM", {})}
    if bf16:
        variants["CharLM bf16"] = ("CharLM", {"precision": "bf16"})
    if compile:
        variants["nanoGPT compiled"] = ("nanoGPT", {"compile": True})
        variants["CharLM compiled"] = ("CharLM", {"compile": True})
        if bf16:
            variants["CharLM bf16 compiled"] = ("CharLM", {"precision": "bf16", "compile": True})
    return variants


def _timed(cmd: list, cwd: Path) -> float:
    t0 = time.perf_counter()
    run(cmd, cwd)
    return time.perf_counter() - t0


# ---------------------------------------------------------------- the table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("nanogpt", type=Path, help="a nanoGPT checkout (github.com/karpathy/nanoGPT)")
    parser.add_argument("--text", type=Path, required=True, help="the one text file both sides train on")
    parser.add_argument("--steps", type=int, default=200, help="training steps per run")
    parser.add_argument("--skip", type=int, default=5, help="first steps of a run left out of its median")
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs per side")
    parser.add_argument("--sample-bytes", type=int, nargs=2, default=[50, 550], metavar=("FEW", "MANY"))
    parser.add_argument("--python", default=sys.executable, help="interpreter for both sides")
    parser.add_argument("--bf16", action="store_true", help="also train CharLM under bf16 autocast (nanoGPT runs fp32 on a CPU)")
    parser.add_argument("--compile", action="store_true", help="also train both sides torch.compile'd, and sample CharLM compiled")
    args = parser.parse_args()
    checkout, text = args.nanogpt.resolve(), args.text.resolve()
    if not (checkout / "train.py").is_file() or not (checkout / "data" / "shakespeare_char" / "prepare.py").is_file():
        sys.exit(f"{checkout} is not a nanoGPT checkout (no train.py, data/shakespeare_char/prepare.py)")
    if not text.is_file():
        sys.exit(f"no such text file: {text}")
    if args.steps <= args.skip:
        sys.exit(f"--steps must be more than --skip ({args.skip})")
    # nanoGPT's sample.py imports tiktoken (for GPT-2 checkpoints) even for character models
    if subprocess.run([args.python, "-c", "import tiktoken"], capture_output=True).returncode != 0:
        sys.exit(f"nanoGPT's sample.py needs tiktoken, which {args.python} cannot import: pip install tiktoken")

    with tempfile.TemporaryDirectory(prefix="vs_nanogpt_") as scratch:
        work = Path(scratch)
        sides = {"nanoGPT": NanoGPT(checkout, args.python, work, text), "CharLM": CharLM(args.python, work, text)}
        variants = training_variants(args.bf16, args.compile)
        print(f"{args.steps} training steps per run, {args.rounds} alternating rounds, batch {BATCH}")

        tokens = BATCH * NANO_CPU["block_size"]
        step_s = {name: [] for name in variants}
        for i in range(args.rounds):  # a fresh out_dir per run: CharLM refuses to overwrite a run
            for name, (side, options) in variants.items():
                # the plain variants' first runs are the checkpoints sampling reads ("train0")
                out = "train0" if i == 0 and not options else f"train{i}-{name.replace(' ', '-')}"
                step_s[name] += sides[side].train(NANO_CPU, args.steps, out, **options)[args.skip :]
        train_rate = {name: tokens / statistics.median(times) for name, times in step_s.items()}

        for side in sides.values():  # a checkpoint at 10.7M for sampling
            side.train(SHAPES["10.7M"], 1, "big")
        few, many = args.sample_bytes
        sample_rate = {}
        # CharLM also samples its int8 export, which keeps the 10.7M model's weights int8
        charlm_int8 = {"nanoGPT CPU": sides["CharLM"].export_int8("train0"), "10.7M": sides["CharLM"].export_int8("big")}
        for shape, out in zip(SHAPES, ("train0", "big")):
            samplers = {name: (side, out, {}) for name, side in sides.items()}
            samplers["CharLM int8"] = (sides["CharLM"], charlm_int8[shape], {})
            if args.compile:
                samplers["CharLM compiled"] = (sides["CharLM"], out, {"compile": True})
            rates = {name: [] for name in samplers}
            for _ in range(args.rounds):
                for name, (side, checkpoint, options) in samplers.items():
                    seconds = side.sample(checkpoint, many, **options) - side.sample(checkpoint, few, **options)
                    rates[name].append((many - few) / seconds)
            sample_rate[shape] = {name: statistics.median(r) for name, r in rates.items()}

    print(f"\n{'measure':<66} {'nanoGPT':>10} {'CharLM':>10} {'ratio':>7}")
    rows = [(f"train tokens/s (nanoGPT CPU shape), {label}", train_rate[nano], train_rate[charlm])
            for label, nano, charlm in TRAIN_ROWS if charlm in train_rate]  # fmt: skip
    rows += [(f"sample bytes/s, batch 1 ({shape})", rate["nanoGPT"], rate["CharLM"]) for shape, rate in sample_rate.items()]
    rows += [(f"sample bytes/s, batch 1 ({shape}), CharLM's int8 export", rate["nanoGPT"], rate["CharLM int8"])
             for shape, rate in sample_rate.items()]  # fmt: skip
    rows += [(f"sample bytes/s, batch 1 ({shape}), CharLM compiled", rate["nanoGPT"], rate["CharLM compiled"])
             for shape, rate in sample_rate.items() if "CharLM compiled" in rate]  # fmt: skip
    for label, nano, charlm in rows:
        print(f"{label:<66} {nano:>10,.0f} {charlm:>10,.0f} {charlm / nano:>6.2f}x")
    print(f"\nsampling: {few} and {many} bytes per run, rate = {many - few} / difference of wall times")
    if args.compile:
        print("CharLM compiled: of the seconds after the first byte that `charlm generate --timings` reports (no build)")


if __name__ == "__main__":
    main()
