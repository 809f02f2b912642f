"""Plain helpers shared by the test files (the fixtures built on them are in conftest.py).

Test files import these by name (``from helpers import tiny_job``): tests/ is on sys.path
under pytest's default import mode, and a helper is easier to read as a function than as a
fixture that returns one.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import NamedTuple

import torch

ROOT = Path(__file__).resolve().parents[1]
WORDS = b"the king is dead long live the queen and all her men shall sing of love and war".split()


def model_job(seq_len: int, **model):
    """The ``JobConfig`` of a small model (32 wide, 2 layers; ``model`` overrides) that reads no data:
    for tests that score, adapt or code bytes with a model."""
    from charlm.config import config_from_dict

    raw = {"data": {"train": "x.bin"}, "max_steps": 1, "seq_len": seq_len, "device": "cpu"}
    raw["model"] = {"d_model": 32, "n_layer": 2, "n_head": 2, **model}
    return config_from_dict(raw)


def write_corpus(out: Path, docs: int = 12, words: int = 2500) -> Path:
    """Prepare (train/val .bin/.idx, meta.json) a corpus with learnable structure: words drawn
    from a short vocabulary, seeded. Returns the prepared data directory."""
    from charlm.prepare import prepare

    src = out / "texts"
    src.mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    for d in range(docs):
        picks = torch.randint(len(WORDS), (words,), generator=gen).tolist()
        (src / f"doc{d:02d}.txt").write_bytes(b" ".join(WORDS[i] for i in picks))
    prepare([src], out / "data", val_fraction=0.2, seed=0)
    return out / "data"


def tiny_job(corpus: Path, out_dir: Path, **overrides) -> dict:
    """The tiny job as a raw dict: trains 30 steps in about a second on one thread.

    ``overrides`` are dotted keys with TOML values, as on the command line:
    ``tiny_job(c, o, max_steps=5, **{"optimizer.lr": 1e-3, "optimizer.kind": '"muon"'})``.
    """
    from charlm.config import apply_overrides

    raw = {
        "out_dir": str(out_dir),
        "seed": 3,
        "seq_len": 32,
        "micro_batch_size": 8,
        "max_steps": 30,
        "device": "cpu",
        "model": {"d_model": 32, "n_layer": 2, "n_head": 2, "n_kv_head": 1},
        "data": {"train": str(corpus / "train.bin"), "val": str(corpus / "val.bin")},
        "scheduler": {"kind": "cosine", "warmup_steps": 5},
        "logging": {"log_every": 1, "eval_every": 0, "eval_bytes": 2048},
    }
    return apply_overrides(raw, [f"{k}={v}" for k, v in overrides.items()])


def make_job(corpus: Path, out_dir: Path, **overrides):
    """The tiny job as a validated ``JobConfig`` (see ``tiny_job``)."""
    from charlm.config import config_from_dict

    return config_from_dict(tiny_job(corpus, out_dir, **overrides), world_size=1)


def write_job(corpus: Path, tmp_path: Path, name: str = "job.toml", **overrides) -> Path:
    """The tiny job as a TOML file in ``tmp_path``, training into ``tmp_path / "run"``."""
    from charlm.config import config_to_toml

    path = tmp_path / name
    path.write_text(config_to_toml(make_job(corpus, tmp_path / "run", **overrides)))
    return path


def fit_text(model, text: bytes, steps: int, batch: int, lr: float) -> None:
    """Train ``model`` briefly on windows of ``text`` (its ``max_len`` long), so that its
    logits are far from uniform: a real model for generation and export tests, in a second."""
    import torch.nn.functional as F

    data = torch.tensor(list(text))
    window = model.max_len
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    for _ in range(steps):
        starts = torch.randint(0, len(data) - window - 1, (batch,))
        chunk = torch.stack([data[s : s + window + 1] for s in starts])
        loss = F.cross_entropy(model(chunk[:, :-1])[0].flatten(0, 1), chunk[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()


def metrics(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


def train_losses(out_dir: Path) -> list[float]:
    return [r["loss"] for r in metrics(out_dir) if "loss" in r]


class Ran(NamedTuple):
    """What ``charlm_main`` saw; the names of ``subprocess.CompletedProcess``, so a test reads the same either way."""

    returncode: int
    stdout: str | bytes
    stderr: str


def charlm_main(*args, binary: bool = False) -> Ran:
    """``charlm ARGS`` in this process, output captured: much faster than a subprocess (torch is
    imported once). ``binary``: stdout as the bytes written (``generate --raw``), else text."""
    from charlm.cli import main
    from charlm.registry import DISABLE_ENV

    stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="surrogateescape")
    stderr = io.StringIO()
    disabled = os.environ.get(DISABLE_ENV)  # --disable-plugins sets it for the process
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code = main([str(a) for a in args])
            except SystemExit as exc:  # argparse's --help, --version and usage errors
                code = exc.code if isinstance(exc.code, int) else 0
    finally:
        if disabled is None:
            os.environ.pop(DISABLE_ENV, None)
        else:
            os.environ[DISABLE_ENV] = disabled
    stdout.flush()
    out = stdout.buffer.getvalue()
    return Ran(code, out if binary else out.decode("utf-8", "replace"), stderr.getvalue())


def charlm_subprocess(*args, cwd: Path = ROOT, site: Path | None = None, env: dict | None = None, timeout: float = 300):
    """``python -m charlm ARGS`` as a real process, text captured. ``site``: a folder of
    distributions (``make_distribution``) the process finds by their entry points."""
    if site is not None:
        env = {**(env or os.environ), "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, "-m", "charlm", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def make_distribution(site: Path, dist: str, ep_name: str, module: str, source: str, version: str = "1.0") -> None:
    """A minimal installed distribution: a module plus a .dist-info with a `charlm` entry point."""
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[charlm]\n{ep_name} = {module}\n")
