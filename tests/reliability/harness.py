"""The reliability harness shared by tests/reliability (small counts) and bench/soak.py (large).

A case is one input (a job file, overrides, a damaged split, a prompt, a command line, a
SIGKILL). It ends as ``"success"``, ``"error"`` (one clear line on stderr, exit 1 or 2) or a
failure: a traceback, a multi-line or missing error, another exit code, a hang, or a broken
promise (a damaged file accepted silently). ``explore`` draws cases with hypothesis and
counts outcomes instead of stopping at the first failure, so that one mechanism serves the
bounded tests and the soak's table.
"""

from __future__ import annotations

import contextlib
import io
import json
import multiprocessing
import os
import random
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from tomli_w import dumps as dumps_toml

from charlm.cli import main
from charlm.registry import DISABLE_ENV

WORDS = b"the king is dead long live the queen and all her men shall sing of love and war".split()
CASE_TIMEOUT_S = 30.0
# A case's tiny models need far less; more means a size was allocated before it was checked.
CASE_PEAK_GROWTH = 1 << 30


class Failure(Exception):
    """A case that broke a promise; its message says how, in one line."""


class Hang(BaseException):
    """Raised by the per-case alarm; a BaseException so that ``except Exception`` cannot swallow it."""


# ---------------------------------------------------------------- fixtures (plain functions)


def prepare_corpus(out: Path, docs: int = 12, words: int = 400) -> Path:
    """A small prepared data directory (train/val .bin/.idx and meta.json), seeded."""
    from charlm.prepare import prepare

    src = out / "texts"
    src.mkdir(parents=True)
    rng = random.Random(0)
    for d in range(docs):
        (src / f"doc{d:02d}.txt").write_bytes(b" ".join(rng.choice(WORDS) for _ in range(words)))
    data = out / "data"
    prepare([src], data, val_fraction=0.25, seed=0)
    return data


def tiny_job(data: Path, out_dir: Path, **overrides) -> dict:
    """A job that trains in well under a second per few steps on one CPU thread."""
    job = {
        "out_dir": str(out_dir),
        "seed": 5,
        "seq_len": 16,
        "micro_batch_size": 4,
        "max_steps": 2,
        "device": "cpu",
        "model": {"d_model": 16, "n_layer": 1, "n_head": 2, "n_kv_head": 1},
        "data": {"train": str(data / "train.bin"), "val": str(data / "val.bin")},
        "scheduler": {"kind": "cosine", "warmup_steps": 2},
        "checkpoint": {"every": 1, "keep_last": 2},
        "logging": {"log_every": 1, "eval_every": 0, "final_eval": False},
    }
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = job
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return job


def write_job(path: Path, job: dict) -> Path:
    path.write_text(dumps_toml(job), encoding="utf-8")
    return path


def tiny_checkpoint(data: Path, out: Path) -> Path:
    """A trained (2 steps) tiny checkpoint for eval and generate cases."""
    from charlm.config import config_from_dict
    from charlm.train import train

    train(config_from_dict(tiny_job(data, out), world_size=1))
    return out / "checkpoints" / "last.pt"


# ---------------------------------------------------------------- running one case


@dataclass
class Result:
    code: int
    stderr: str
    stdout: bytes = b""


@contextlib.contextmanager
def time_limit(seconds: float):
    def alarm(signum, frame):
        raise Hang()

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_cli(argv: list[str], stdin: bytes = b"", timeout_s: float = CASE_TIMEOUT_S) -> Result:
    """``charlm ARGV`` in this process (fast: torch is imported once), stdout and stderr captured.

    An exception that escapes ``main`` is the traceback a user would see: a ``Failure``; so
    is a case that raised the process's peak memory by more than ``CASE_PEAK_GROWTH``.
    """
    peak = _peak_rss()
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="surrogateescape")
    stderr = io.StringIO()
    saved_env = os.environ.get(DISABLE_ENV)
    saved_stdin = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    try:
        with time_limit(timeout_s), contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse's --help and --version
                code = exc.code if isinstance(exc.code, int) else 0
    except Hang:
        raise Failure(f"no result within {timeout_s:.0f} s (hang): charlm {_show(argv)}") from None
    except BaseException as exc:  # noqa: BLE001 - any escape is the finding
        raise Failure(f"traceback {type(exc).__name__}: {_first_line(exc)}: charlm {_show(argv)}") from None
    finally:
        sys.stdin = saved_stdin
        if saved_env is None:
            os.environ.pop(DISABLE_ENV, None)
        else:
            os.environ[DISABLE_ENV] = saved_env
    stdout.flush()
    if (grown := _peak_rss() - peak) > CASE_PEAK_GROWTH:
        raise Failure(f"peak memory grew by {grown >> 20} MiB (a size allocated before it was checked): charlm {_show(argv)}")
    return Result(code, stderr.getvalue(), stdout.buffer.getvalue())


def _peak_rss() -> int:
    """This process's peak resident memory in bytes (Linux reports KiB, macOS bytes)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def judge(result: Result, argv: list[str]) -> str:
    """``"success"`` or ``"error"`` for a clean ending; ``Failure`` for anything else."""
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("warning: ")]
    if "Traceback" in result.stderr:
        raise Failure(f"traceback on stderr: charlm {_show(argv)}")
    if result.code == 0:
        return "success"
    if result.code not in (1, 2):
        raise Failure(f"exit {result.code}: charlm {_show(argv)}")
    if len(lines) != 1:
        raise Failure(f"exit {result.code} with {len(lines)} stderr lines {lines[:3]!r}: charlm {_show(argv)}")
    return "error"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""


def _clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


def _show(argv: list[str]) -> str:
    return " ".join(repr(a) if not a.isprintable() or " " in a or not a else a for a in argv)[:400]


# ---------------------------------------------------------------- exploring


@dataclass
class Tally:
    category: str
    outcomes: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    @property
    def cases(self) -> int:
        return sum(self.outcomes.values())

    def report(self, limit: int = 8) -> str:
        unique = list(dict.fromkeys(self.failures))
        return f"{self.category}: {len(self.failures)} of {self.cases} cases failed:\n  " + "\n  ".join(unique[:limit])


def explore(category: str, strategy, check, cases: int, random_seed: int | None = None) -> Tally:
    """Run ``check(case)`` on ``cases`` cases drawn from ``strategy``; count, don't stop.

    Without ``random_seed`` the cases are the same on every run (derandomized).
    """
    tally = Tally(category)

    @settings(
        max_examples=cases,
        database=None,
        deadline=None,
        derandomize=random_seed is None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def one(case):
        try:
            tally.outcomes[check(case)] += 1
        except Failure as exc:
            tally.outcomes["failure"] += 1
            tally.failures.append(f"{exc} <- case {_clip(repr(case))}")

    if random_seed is not None:
        one = seed(random_seed)(one)
    one()
    return tally


# ---------------------------------------------------------------- strategies

HUGE = [10**30, -(10**30), 2**63, 2**64, -(2**63) - 1]
# sizes that fit in 64 bits but not in memory: they must fail fast, naming the key
SIZES = [2**20, 2**24, 10**8, 10**9, 2**40, 2**62]
SIZE_KEYS = ["seq_len", "micro_batch_size", "model.d_model", "model.n_layer", "model.ngram_buckets", "model.mlp.hidden", "logging.eval_bytes"]
KNOWN_KEYS = [
    "out_dir", "seed", "seq_len", "micro_batch_size", "batch_size_tokens", "precision", "compile", "device",
    "max_steps", "max_time", "grad_clip", "on_nonfinite", "model.d_model", "model.n_layer", "model.n_head",
    "model.n_kv_head", "model.block", "model.attention", "model.positional", "model.mlp", "model.norm",
    "model.tie_embeddings", "model.logit_softcap", "model.init_std", "model.ngram_buckets", "model.layers",
    "data.train", "data.val", "data.num_workers", "optimizer", "optimizer.kind", "optimizer.lr",
    "optimizer.betas", "optimizer.weight_decay", "scheduler.kind", "scheduler.warmup_steps",
    "checkpoint.every", "checkpoint.keep_last", "logging.log_every", "logging.eval_every",
    "logging.eval_bytes", "logging.final_eval", "logging.wandb_project", "logging.tensorboard",
]

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
keys = st.one_of(st.sampled_from([k.split(".")[-1] for k in KNOWN_KEYS]), text)
scalars = st.one_of(
    st.integers(),
    st.sampled_from(HUGE + SIZES),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    text,
    st.sampled_from(["adamw", "muon", "cosine", "wsd", "transformer", "gqa", "rope", "swiglu", "fp16", "auto", "5m", "-1s", ""]),
)
trees = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4), max_leaves=12)


@st.composite
def job_files(draw, data: Path, out_dir: Path) -> str:
    """TOML text: a tiny job with some keys replaced by random trees, a random tree, or junk."""
    kind = draw(st.sampled_from(["mutated", "mutated", "mutated", "tree", "deep", "junk"]))
    if kind == "tree":
        return dumps_toml(draw(st.dictionaries(keys, trees, max_size=6)))
    if kind == "deep":
        depth = draw(st.sampled_from([10, 100, 1000, 5000, 50000]))
        opener = draw(st.sampled_from(["[", "{a = "]))
        closer = "]" if opener == "[" else "}"
        return f"seed = {opener * depth}1{closer * depth}\n"
    if kind == "junk":
        return draw(st.binary(max_size=200)).decode("utf-8", "surrogateescape")
    job = tiny_job(data, out_dir)
    for dotted in draw(st.lists(st.sampled_from(KNOWN_KEYS + ["model.unknown", "ключ", "data.⚡"]), min_size=1, max_size=3)):
        *parents, leaf = dotted.split(".")
        node = job
        for key in parents:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[leaf] = draw(trees)
    return dumps_toml(job)


override_values = st.one_of(
    scalars.map(lambda v: dumps_toml({"v": v})[4:].strip()),
    st.sampled_from(["nan", "inf", "-inf", "1e999", "10" * 20, "[" * 3000 + "]" * 3000, "{", '"', "true", "[1, 'a']", ""]),
    text,
)
huge_sizes = st.tuples(st.sampled_from(SIZE_KEYS), st.sampled_from(SIZES)).map(
    lambda kv: f"{kv[0]}={[kv[1]] if kv[0] == 'model.ngram_buckets' else kv[1]}"
)
overrides = st.lists(
    st.one_of(st.tuples(st.one_of(st.sampled_from(KNOWN_KEYS), text), override_values).map(lambda kv: f"{kv[0]}={kv[1]}"), huge_sizes),
    min_size=1,
    max_size=3,
)


def check_job_file(job_text: str, path: Path) -> str:
    path.write_bytes(job_text.encode("utf-8", "surrogateescape"))
    argv = ["config", "validate", str(path)]
    return judge(run_cli(argv), argv)


def check_overrides(case: list[str], job_path: Path) -> str:
    argv = ["config", "validate", str(job_path), *case]
    return judge(run_cli(argv), argv)


# ---------------------------------------------------------------- damaged splits


split_damage = st.tuples(
    st.sampled_from(["val.bin", "val.bin", "val.idx", "meta.json"]),
    st.sampled_from(["flip", "truncate", "random", "extend", "delete"]),
    st.floats(0, 1, exclude_max=True),
    st.binary(min_size=1, max_size=64),
)


def damage(case_dir: Path, data: Path, case: tuple) -> bool:
    """Copy ``data``'s val split and meta.json into ``case_dir`` and damage one file as ``case`` says.

    Returns whether ``val.bin`` differs from the prepared one while meta.json is intact: the
    case where silence would be wrong.
    """
    target, how, where, noise = case
    case_dir.mkdir(parents=True, exist_ok=True)
    for name in ("val.bin", "val.idx", "meta.json"):
        (case_dir / name).write_bytes((data / name).read_bytes())
    path = case_dir / target
    original = path.read_bytes()
    at = int(where * len(original))
    if how == "flip":
        damaged = original[:at] + bytes([original[at] ^ (noise[0] or 1)]) + original[at + 1 :]
    elif how == "truncate":
        damaged = original[:at]
    elif how == "random":
        damaged = noise * (at // len(noise) + 1)
    else:
        damaged = original + noise
    if how == "delete":
        path.unlink()
    else:
        path.write_bytes(damaged)
    return target == "val.bin"


def check_open_split(case: tuple, case_dir: Path, data: Path) -> str:
    from charlm.data import open_split
    from charlm.errors import CharLMError

    damage(case_dir, data, case)
    try:
        open_split(case_dir / "val.bin")
    except CharLMError as exc:
        if len(str(exc).splitlines()) != 1:
            raise Failure(f"multi-line error for damaged split {case!r}") from None
        return "error"
    except Exception as exc:  # noqa: BLE001
        raise Failure(f"traceback {type(exc).__name__}: {_first_line(exc)} opening a split damaged by {case!r}") from None
    return "success"


def check_eval(case: tuple, case_dir: Path, data: Path, checkpoint: Path) -> str:
    bin_damaged = damage(case_dir, data, case)
    argv = ["eval", "--checkpoint", str(checkpoint), "--data", str(case_dir / "val.bin"), "--no-baselines", "--max-bytes", "512", "--device", "cpu"]
    outcome = judge(run_cli(argv), argv)
    if bin_damaged and outcome == "success":
        raise Failure(f"eval accepted a val.bin damaged by {case!r} silently (meta.json's sha256 differs)")
    return outcome


# ---------------------------------------------------------------- prompts and command lines

prompts = st.one_of(
    st.text(max_size=64),  # includes NUL and lone surrogates (how Python passes invalid UTF-8 argv)
    st.binary(max_size=64).map(lambda b: b.decode("utf-8", "surrogateescape")),
    st.sampled_from([0, 1, 15, 16, 17, 1000, 1 << 20]).map(lambda n: "ab\x00\xff" * (n // 4) + "a" * (n % 4)),
)


# batches of samples that cannot fit (or, the last, cannot be printed whole), besides the usual one
BATCHES = [[], [], [], ["--num-samples", "3"], ["--num-samples", str(2**40)], ["--num-samples", str(10**8)],
           ["--num-samples", "3", "--max-new", str(2**62)]]


@st.composite
def generate_calls(draw, checkpoint: Path, case_dir: Path) -> tuple[list[str], bytes]:
    """``(argv, stdin)`` for a generate call whose prompt comes from --prompt, --prompt-file or stdin."""
    argv = ["generate", "--checkpoint", str(checkpoint), "--max-new", "4", "--seed", "0", "--device", "cpu"]
    argv += draw(st.sampled_from(BATCHES))
    prompt = draw(prompts)
    source = draw(st.sampled_from(["--prompt", "--prompt-file", "stdin"]))
    if source == "--prompt":
        return argv + ["--prompt", prompt], b""
    raw = prompt.encode("utf-8", "surrogatepass")
    if source == "stdin":
        return argv, raw
    case_dir.mkdir(parents=True, exist_ok=True)
    (case_dir / "prompt.bin").write_bytes(raw)
    return argv + ["--prompt-file", str(case_dir / "prompt.bin")], b""


def check_generate(call: tuple[list[str], bytes]) -> str:
    argv, stdin = call
    return judge(run_cli(argv, stdin=stdin), argv)


INTS = ["-1", "0", "1", "2", "3", "8", "64", str(2**31), str(2**40), str(2**62), str(2**63), str(10**30), "x", "1.5", ""]
FLOATS = ["nan", "inf", "-inf", "0", "-1", "0.5", "1", "2", "1e308", "1e-320", "x"]
DEVICES = ["cpu", "auto", "cuda", "cuda:9", "mps", "tpu", ""]


def flag_table(paths: dict[str, str]) -> dict[str, dict[str, list[str] | None]]:
    """Per command, its flags and the values tried for each (``None``: a switch). No command
    here trains or downloads: those need subprocesses (crash injection covers ``run``)."""
    files = [paths["checkpoint"], paths["data"], paths["missing"], paths["dir"], paths["idx"], ""]
    return {
        "eval": {
            "--checkpoint": files, "--data": files, "--stride": INTS, "--max-bytes": INTS, "--batch-size": INTS,
            "--device": DEVICES, "--no-baselines": None, "--json": None,
        },
        "generate": {
            "--checkpoint": files, "--prompt": ["", "a", "\x00", "\udcff"], "--max-new": ["-1", "0", "4", str(2**63), str(10**30), "x"],
            "--temperature": FLOATS, "--top-k": INTS, "--top-p": FLOATS, "--min-p": FLOATS, "--seed": INTS,
            "--num-samples": ["-1", "0", "1", "3", str(2**40), str(2**63), str(10**30)], "--stop": ["", "a", "\x00"],
            "--max-context-tokens": INTS, "--context-policy": ["recompute", "slide", "error", "x"], "--raw": None,
            "--no-echo": None, "--device": DEVICES, "--prompt-file": files,
        },
        "export": {
            "--list": None, "--format": ["int8", "safetensors", "onnx", "x", ""], "--checkpoint": files,
            "--out": [paths["out"], paths["dir"], paths["missing"] + "/x/y.bin", ""], "--no-validate": None, "--data": files,
        },
        "config validate": {"--max-steps": INTS, "--precision": ["fp32", "bf16", "fp16", "x"], "--device": DEVICES, "--no-val": None},
        "list-plugins": {"--json": None, "--verbose": None},
        "plot": {"-o": [paths["out"] + ".png", paths["dir"], ""], "--x": ["step", "tokens", "elapsed_s", "x"]},
    }


@st.composite
def command_lines(draw, paths: dict[str, str]) -> list[str]:
    table = flag_table(paths)
    command = draw(st.sampled_from(sorted(table)))
    argv = command.split()
    if command == "config validate":
        argv.append(draw(st.sampled_from([paths["job"], paths["missing"], paths["data"], ""])))
    if command == "plot":
        argv.append(draw(st.sampled_from([paths["run"], paths["dir"], paths["missing"]])))
    if command == "generate":
        argv += ["--max-new", "4"]
    for flag in draw(st.lists(st.sampled_from(sorted(table[command])), max_size=5)):
        values = table[command][flag]
        argv += [flag] if values is None else [flag, draw(st.sampled_from(values))]
    if draw(st.booleans()):
        argv.insert(draw(st.integers(0, len(argv))), draw(st.sampled_from(["--", "-", "--help", "--bogus", "x=1", "--version", "\x00"])))
    return argv


def check_command_line(argv: list[str]) -> str:
    return judge(run_cli(argv), argv)


# ---------------------------------------------------------------- crash injection


def _run_child(argv: list[str], log_path: str) -> None:
    """A forked ``charlm`` process: torch is already imported by the fork server, so it starts in
    milliseconds; its exit code is charlm's."""
    import torch

    torch.set_num_threads(1)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.exit(main(argv))


def _fork_server():
    """The fork server, started warm (see forkserver_preload.py). Python 3.11's fork server
    ignores the parent's sys.path, so it finds this directory's modules by PYTHONPATH, set
    only while it starts."""
    from multiprocessing import forkserver

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["forkserver_preload", __name__])
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent), saved]))
    try:
        forkserver.ensure_running()
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = saved
    return ctx


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _checkpoints(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "checkpoints").glob("*.pt"))


def _same_state(a: dict, b: dict) -> bool:
    import torch

    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_same_state(x, y) for x, y in zip(a, b))
    return a == b


def scratch_dir(parent: Path) -> Path:
    """A directory on tmpfs when there is one: crash injection kills processes, it does not cut
    power, so it needs no fsync to reach a disk, and tmpfs makes each checkpoint write cheap."""
    import tempfile

    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else parent
    return Path(tempfile.mkdtemp(prefix="charlm-crash-", dir=base))


def crash_injection(data: Path, work: Path, kills: int, rng: random.Random, max_steps: int = 60) -> Counter:
    """SIGKILL a ``charlm run --resume auto`` ``kills`` times at random moments, then let it finish.

    Each kill lands a random number of steps (0-3) into a segment plus a random few
    milliseconds, so that kills fall in steps, checkpoint writes and start-up alike. Counts
    ``injections`` (kills of a live process), ``corrupt`` (checkpoint files that do not load after
    a kill), ``leaked`` (``.tmp`` files left at the end), ``duplicated`` and ``missing`` (metrics
    records of a step logged more than once, or never), ``diverged`` (1 if the final state
    differs from an uninterrupted run's) and ``errors`` (a segment or the final run that exited
    non-zero by itself).
    """
    from charlm.checkpoint import load_checkpoint
    from charlm.errors import CharLMError

    ctx = _fork_server()
    counts = Counter(injections=0, corrupt=0, leaked=0, duplicated=0, missing=0, diverged=0, errors=0)
    work.mkdir(parents=True, exist_ok=True)

    def launch(out_dir: Path, tag: str):
        job = write_job(work / f"{out_dir.name}.toml", tiny_job(data, out_dir, max_steps=max_steps))
        proc = ctx.Process(target=_run_child, args=(["run", str(job), "--resume", "auto"], str(work / f"{tag}.log")))
        proc.start()
        return proc

    reference, run = work / "reference", work / "run"
    proc = launch(reference, "reference")
    proc.join()
    counts["errors"] += proc.exitcode != 0
    for i in range(kills):
        metrics = run / "metrics.jsonl"
        start_lines, steps, pause = _lines(metrics), rng.randint(0, 3), rng.uniform(0, 0.02)
        proc = launch(run, f"segment-{i:03d}")
        deadline = time.monotonic() + 60
        while proc.exitcode is None and _lines(metrics) - start_lines < steps and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(pause)
        if proc.exitcode is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        counts["injections"] += proc.exitcode == -signal.SIGKILL
        counts["errors"] += proc.exitcode not in (0, -signal.SIGKILL)
        for path in _checkpoints(run):
            try:
                load_checkpoint(path)
            except CharLMError:
                counts["corrupt"] += 1
    proc = launch(run, "final")
    proc.join()
    counts["errors"] += proc.exitcode != 0

    counts["leaked"] = len(list(run.rglob("*.tmp")))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()] if (run / "metrics.jsonl").exists() else []
    logged = Counter(r["step"] for r in records if "loss" in r)
    counts["duplicated"] = sum(n - 1 for n in logged.values())
    counts["missing"] = sum(step not in logged for step in range(1, max_steps + 1))
    try:
        ours, theirs = load_checkpoint(run / "checkpoints" / "last.pt"), load_checkpoint(reference / "checkpoints" / "last.pt")
        same = ours["step"] == theirs["step"] == max_steps and all(_same_state(ours[k], theirs[k]) for k in ("model", "optimizer"))
    except (CharLMError, OSError):
        same = False
    counts["diverged"] = int(not same)
    return counts
