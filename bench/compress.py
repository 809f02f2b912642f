"""Compressed size (bits/byte, the real file with its header) and speed: charlm static and
adaptive next to PPMd order 6, xz, bz2, zstd and brotli. Bench-only deps: pip install -e '.[bench]'.

    python bench/compress.py --checkpoint runs/micro/checkpoints/last.pt \\
        data/shakespeare/val.bin other_english.txt [--max-bytes N] [--threads 2]

A ``.bin`` is read as a split (its bytes, separators included); any other file as raw bytes.
Writes the table to bench/results/compress.md.
"""

from __future__ import annotations

import argparse
import bz2
import hashlib
import lzma
import time
from pathlib import Path

import brotli
import pyppmd
import torch
import zstandard

from charlm import load
from charlm.adapt import AdaptOptions
from charlm.compress import compress, decompress, file_sha256
from charlm.data import open_split
from charlm.evaluate import as_tokens

BASELINES = {
    "PPMd order 6, 256 MiB": lambda d: ppmd7(d),
    "xz -9e": lambda d: lzma.compress(d, preset=9 | lzma.PRESET_EXTREME),
    "bz2 -9": lambda d: bz2.compress(d, 9),
    "zstd 19": lambda d: zstandard.ZstdCompressor(level=19).compress(d),
    "brotli 11": lambda d: brotli.compress(d, quality=11),
}


def ppmd7(data: bytes) -> bytes:
    """PPMd var. H (7-Zip's text method) at order 6 with 256 MiB."""
    encoder = pyppmd.Ppmd7Encoder(6, 256 << 20)
    return encoder.encode(data) + encoder.flush()


def read_text(path: str, max_bytes: int | None) -> bytes:
    data = as_tokens(open_split(path).tokens).tobytes() if path.endswith(".bin") else Path(path).read_bytes()
    return data[:max_bytes]


def charlm_row(lm, sha: bytes, data: bytes, adapt: AdaptOptions | None, threads: int) -> tuple[float, float, float]:
    t0 = time.perf_counter()
    blob = compress(lm, data, sha, adapt, threads=threads)
    t1 = time.perf_counter()
    assert decompress(lm, blob, sha) == data
    t2 = time.perf_counter()
    return 8 * len(blob) / len(data), len(data) / (t1 - t0), len(data) / (t2 - t1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("texts", nargs="+")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--max-bytes", type=int)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="bench/results/compress.md")
    args = parser.parse_args()
    lm, sha = load(args.checkpoint), file_sha256(args.checkpoint)
    texts = {path: read_text(path, args.max_bytes) for path in args.texts}
    rows: dict[str, list[str]] = {}
    for path, data in texts.items():
        for name, adapt in (("charlm static", None), ("charlm adaptive", AdaptOptions())):
            bpb, enc, dec = charlm_row(lm, sha, data, adapt, args.threads)
            rows.setdefault(name, []).append(f"{bpb:.3f} ({enc:,.0f} / {dec:,.0f} B/s)")
            print(path, name, f"{bpb:.4f} bits/byte, compress {enc:,.0f} B/s, decompress {dec:,.0f} B/s", flush=True)
        for name, squeeze in BASELINES.items():
            rows.setdefault(name, []).append(f"{8 * len(squeeze(data)) / len(data):.3f}")
    header = "| bits/byte (compress / decompress speed) | " + " | ".join(
        f"{Path(p).name} ({len(d):,} B, sha256 {hashlib.sha256(d).hexdigest()[:12]})" for p, d in texts.items()
    ) + " |"
    lines = [header, "|---|" + "---:|" * len(texts)] + [f"| {name} | " + " | ".join(v) + " |" for name, v in rows.items()]
    machine = f"torch {torch.__version__}, {args.threads} threads, checkpoint sha256 {sha.hex()[:12]}"
    table = "\n".join(lines) + f"\n\n{machine}\n"
    print(table)
    Path(args.out).write_text(table)


if __name__ == "__main__":
    main()
