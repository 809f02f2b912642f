"""``charlm compress IN OUT --checkpoint C`` and ``charlm decompress IN OUT --checkpoint C``."""

import sys
import time


def add_parser(sub):
    parser = sub.add_parser("compress", help="compress a file with a model (range coding, adaptive and mixed by default)")
    parser.add_argument("input", help="the file to compress")
    parser.add_argument("output", help="the compressed file to write")
    parser.add_argument("--checkpoint", required=True, help="a checkpoint (.pt), or an int8 or safetensors export of one")
    parser.add_argument("--no-adapt", action="store_true", help="code with the static model (no learning while reading)")
    parser.add_argument(
        "--adapt", nargs="*", default=[], metavar="KEY=VALUE", help="adaptation options: lr, steps, window, params, optimizer"
    )
    parser.add_argument("--no-mix", action="store_true", help="code with the network alone (no count models mixed in)")
    parser.add_argument(
        "--mix", nargs="*", default=[], metavar="KEY=VALUE", help="context-mixing options: orders, slot_bits, alpha, lr (charlm.mixer)"
    )
    parser.add_argument("--window", type=int, default=64, help="bytes per chunk with --no-adapt (default 64)")
    parser.add_argument("--segments", type=int, help="rows coded side by side (default: about one per 2 KiB, at most 64)")
    parser.add_argument(
        "--threads", type=int, help="torch threads; recorded, decompression uses the same (default: 2, or 1 on a 1-core machine)"
    )
    parser.set_defaults(func=run_compress)

    parser = sub.add_parser("decompress", help="restore a file written by `charlm compress` (same checkpoint)")
    parser.add_argument("input", help="the compressed file")
    parser.add_argument("output", help="the restored file to write (written only when exact)")
    parser.add_argument("--checkpoint", required=True, help="the checkpoint the file was compressed with")
    parser.set_defaults(func=run_decompress)


def _read(path: str) -> bytes:
    from charlm.errors import CharLMError

    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise CharLMError(f"cannot read {path}: {exc.strerror}") from None


def _load(checkpoint: str):
    """The model on CPU (the arithmetic both sides must repeat exactly) and the checkpoint's sha256."""
    from charlm.compress import file_sha256
    from charlm.errors import CharLMError
    from charlm.loading import checkpoint_path, load_checkpoint_model

    path = checkpoint_path(checkpoint)  # a run directory means its last.pt
    if not path.is_file():
        raise CharLMError(f"{checkpoint}: not a checkpoint or run directory")
    model, _ = load_checkpoint_model(path, "cpu")
    return model, file_sha256(path)


def run_compress(args) -> int:
    from pathlib import Path

    from charlm.adapt import adapt_options, parse_key_values
    from charlm.atomic import write_atomic
    from charlm.compress import compress, default_threads
    from charlm.errors import UsageError
    from charlm.mixer import mix_options

    if args.no_adapt and args.adapt:
        raise UsageError("--no-adapt and --adapt options exclude each other")
    if args.no_mix and args.mix:
        raise UsageError("--no-mix and --mix options exclude each other")
    adapt = None if args.no_adapt else adapt_options(parse_key_values(args.adapt))
    mix = None if args.no_mix else mix_options(parse_key_values(args.mix))
    data = _read(args.input)
    model, sha = _load(args.checkpoint)
    t0 = time.perf_counter()
    blob = compress(model, data, sha, adapt, window=args.window, segments=args.segments,
                    threads=default_threads() if args.threads is None else args.threads, mix=mix)
    seconds = time.perf_counter() - t0
    write_atomic(Path(args.output), blob)
    rate = 8 * len(blob) / max(len(data), 1)
    speed = len(data) / seconds if seconds > 0 else float("inf")
    print(f"{args.input}: {len(data):,} -> {len(blob):,} bytes ({rate:.4f} bits/byte) in {seconds:.1f} s ({speed:,.0f} bytes/s)", file=sys.stderr)
    return 0


def run_decompress(args) -> int:
    from pathlib import Path

    from charlm.atomic import write_atomic
    from charlm.compress import decompress

    blob = _read(args.input)
    model, sha = _load(args.checkpoint)
    t0 = time.perf_counter()
    data = decompress(model, blob, sha)
    seconds = time.perf_counter() - t0
    write_atomic(Path(args.output), data)
    speed = len(data) / seconds if seconds > 0 else float("inf")
    print(f"{args.output}: {len(data):,} bytes restored in {seconds:.1f} s ({speed:,.0f} bytes/s)", file=sys.stderr)
    return 0
