"""Data pipeline throughput: `prepare` MB/s and PackedDataset loader batches/s.

prepare packs a generated corpus (200 MB of text files by default, plus a JSONL corpus a
quarter that size) in a temporary directory, removed afterwards. The loader reads the
packed split at the micro job's shape (charlm/recipes/micro.toml's seq_len and
micro_batch_size). Targets: prepare >= 100 MB/s; the loader >= 20x the
rate a training step consumes batches (a micro step takes roughly 0.1 s: >= 200 batches/s).

    python bench/data_throughput.py [--mb 200] [--batches 3000]
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import MICRO_NAME, micro_job  # bench/ is on sys.path when run as a script

from charlm.data import PackedDataset
from charlm.prepare import prepare

STEP_SECONDS = 0.1  # a micro training step, roughly
FILE_BYTES = 1_000_000


def pseudo_text(rng: np.random.Generator, n: int) -> bytes:
    """Printable bytes with a newline now and then: what prepare sees in a text corpus."""
    data = rng.integers(32, 127, size=n, dtype=np.uint8)
    data[rng.integers(0, n, size=n // 60)] = ord("\n")
    return data.tobytes()


def make_corpus(root: Path, mb: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    files = root / "files"
    files.mkdir()
    for i in range(mb * 1_000_000 // FILE_BYTES):
        (files / f"doc-{i:05d}.txt").write_bytes(pseudo_text(rng, FILE_BYTES))
    jsonl = root / "records.jsonl"
    with open(jsonl, "w") as f:
        written = 0
        while written < mb * 1_000_000 // 4:
            line = json.dumps({"text": pseudo_text(rng, 2048).decode()}) + "\n"
            f.write(line)
            written += len(line)
    return files, jsonl


def time_prepare(inputs: list[Path], out: Path) -> tuple[float, float]:
    size = sum(p.stat().st_size for i in inputs for p in ([i] if i.is_file() else i.rglob("*")))
    t0 = time.perf_counter()
    prepare(inputs, out)
    return size / 1e6, time.perf_counter() - t0


def time_loader(train_bin: Path, seq_len: int, batch: int, workers: int, n: int) -> float:
    ds = PackedDataset(train_bin, seq_len, batch, seed=0)
    loader = ds.loader(num_workers=workers)
    for _ in itertools.islice(loader, 20):  # warm-up: worker start, page cache
        pass
    t0 = time.perf_counter()
    for _ in itertools.islice(loader, n):
        pass
    return n / (time.perf_counter() - t0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="size of the generated text-file corpus")
    parser.add_argument("--batches", type=int, default=3000, help="batches timed per loader row")
    args = parser.parse_args()
    job = micro_job()
    seq_len, batch = job.seq_len, job.micro_batch_size

    root = Path(tempfile.mkdtemp(prefix="charlm-bench-data-"))
    try:
        files, jsonl = make_corpus(root, args.mb)
        rows = []
        mb, s = time_prepare([files], root / "packed")
        rows.append((f"prepare {mb:.0f} MB of {FILE_BYTES // 1_000_000} MB text files", s, f"{mb / s:,.0f} MB/s", ">= 100 MB/s", mb / s >= 100))
        mb, s = time_prepare([jsonl], root / "packed-jsonl")
        rows.append((f"prepare {mb:.0f} MB of JSONL (2 KB records)", s, f"{mb / s:,.0f} MB/s", "(info)", None))
        need = 20 / STEP_SECONDS
        for workers in (0, 2):
            rate = time_loader(root / "packed" / "train.bin", seq_len, batch, workers, args.batches)
            label = f"loader seq_len {seq_len} x batch {batch}, {workers} workers"
            rows.append((label, args.batches / rate, f"{rate:,.0f} batches/s", f">= {need:.0f} batches/s", rate >= need))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"data throughput ({MICRO_NAME}; python {sys.version.split()[0]})")
    print(f"{'what':<48} {'seconds':>8} {'rate':>18}  {'target':<18} ok")
    for what, seconds, rate, target, ok in rows:
        print(f"{what:<48} {seconds:>8.2f} {rate:>18}  {target:<18} {'-' if ok is None else 'yes' if ok else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
