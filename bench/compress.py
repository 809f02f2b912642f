"""Compressed size (bits/byte) and speed: charlm static, static+mix, adaptive and adaptive+mix next to
PPMd order 6, xz, bz2, zstd and brotli. Bench-only deps: pip install -e '.[bench]'.

    python bench/compress.py --checkpoint runs/micro/checkpoints/last.pt \\
        data/shakespeare/val.bin other_english.txt [--max-bytes N] [--code-bytes N] [--threads 2]

A ``.bin`` is read as a split (its bytes, separators included); any other file as raw bytes.
For charlm, two figures per text: ``charlm compress``'s real file (header included) and its
speed both ways on the first ``--code-bytes`` bytes (all by default), and the code length
over the whole text from ``charlm.adapt.read_costs`` (the same reading order, without the
header and the coder's fixed-point loss: what ``eval --adapt`` reports), for when coding the
whole text takes too long. Writes the table to bench/results/compress.md.
"""

from __future__ import annotations

import argparse
import bz2
import hashlib
import lzma
import math
import time
from pathlib import Path

import brotli
import numpy as np
import pyppmd
import torch
import zstandard

from charlm.adapt import AdaptOptions, auto_segments, read_costs
from charlm.compress import compress, decompress, file_sha256
from charlm.data import open_split
from charlm.evaluate import as_tokens
from charlm.loading import load_checkpoint_model
from charlm.mixer import MixOptions

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


CODINGS = {
    "charlm static": (None, None),
    "charlm static+mix": (None, MixOptions()),
    "charlm adaptive": (AdaptOptions(), None),
    "charlm adaptive+mix": (AdaptOptions(), MixOptions()),
}


def coded(model, sha: bytes, data: bytes, adapt, mix, threads: int) -> tuple[float, float, float]:
    """The real file's bits/byte and compress / decompress bytes/s."""
    t0 = time.perf_counter()
    blob = compress(model, data, sha, adapt, threads=threads, mix=mix)
    t1 = time.perf_counter()
    assert decompress(model, blob, sha) == data
    t2 = time.perf_counter()
    return 8 * len(blob) / len(data), len(data) / (t1 - t0), len(data) / (t2 - t1)


def code_length(model, data: bytes, adapt, mix, threads: int) -> float:
    """Bits/byte over the whole text in the coder's reading order (no header)."""
    torch.set_num_threads(threads)
    tokens = np.frombuffer(data, np.uint8)
    options = adapt or AdaptOptions()
    costs = read_costs(model, tokens, model.max_len, options, adapt is not None, auto_segments(len(data)), mix)
    return float(costs.mean()) / math.log(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("texts", nargs="+")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--max-bytes", type=int)
    parser.add_argument("--code-bytes", type=int, help="run compress/decompress on the first N bytes only")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="bench/results/compress.md")
    args = parser.parse_args()
    (model, _), sha = load_checkpoint_model(args.checkpoint), file_sha256(args.checkpoint)
    texts = {path: read_text(path, args.max_bytes) for path in args.texts}
    rows: dict[str, list[str]] = {}
    for path, data in texts.items():
        head = data[: args.code_bytes]
        for name, (adapt, mix) in CODINGS.items():
            bpb, enc, dec = coded(model, sha, head, adapt, mix, args.threads)
            whole = code_length(model, data, adapt, mix, args.threads) if len(head) < len(data) else bpb
            rows.setdefault(name, []).append(f"{whole:.3f}; file {bpb:.3f} ({enc:,.0f} / {dec:,.0f} B/s)")
            print(path, name, f"{whole:.4f} bits/byte; first {len(head):,} B: file {bpb:.4f} bits/byte,"
                  f" compress {enc:,.0f} B/s, decompress {dec:,.0f} B/s", flush=True)
        for name, squeeze in BASELINES.items():
            rows.setdefault(name, []).append(f"{8 * len(squeeze(data)) / len(data):.3f}")
    coded_bytes = f"the first {args.code_bytes:,} B" if args.code_bytes else "the whole text"
    header = f"| bits/byte (charlm: whole text; file on {coded_bytes}, compress / decompress speed) | " + " | ".join(
        f"{Path(p).name} ({len(d):,} B, sha256 {hashlib.sha256(d).hexdigest()[:12]})" for p, d in texts.items()
    ) + " |"
    lines = [header, "|---|" + "---:|" * len(texts)] + [f"| {name} | " + " | ".join(v) + " |" for name, v in rows.items()]
    machine = f"torch {torch.__version__}, {args.threads} threads, checkpoint sha256 {sha.hex()[:12]}"
    table = "\n".join(lines) + f"\n\n{machine}\n"
    print(table)
    Path(args.out).write_text(table)


if __name__ == "__main__":
    main()
