"""``charlm eval --checkpoint C --data SPLIT.bin``: bits per byte, next to zlib, bz2 and lzma."""

import json
import sys


def add_parser(sub):
    parser = sub.add_parser("eval", help="bits per byte of a checkpoint or artefact on a data split")
    parser.add_argument(
        "--checkpoint", required=True, metavar="PATH", help="a checkpoint (.pt), a run directory, or any exporter's artefact"
    )
    parser.add_argument("--data", required=True, help="a split written by `charlm data prepare` (.bin)")
    parser.add_argument("--stride", type=int, help="bytes between window starts (default: half the context)")
    parser.add_argument("--max-bytes", type=int, help="evaluate only the first N bytes of the split")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (default 8)")
    parser.add_argument("--device", default="auto", help='"auto" (default), "cpu", "cuda", "cuda:N", "mps"')
    parser.add_argument("--no-baselines", action="store_true", help="skip the zlib/bz2/lzma baselines")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run_eval)


def run_eval(args) -> int:
    from charlm import distributed
    from charlm.config import resolve_device
    from charlm.data import open_split
    from charlm.errors import UsageError
    from charlm.evaluate import as_tokens, compressor_bpb, evaluate_bpb
    from charlm.loading import load_runner
    from charlm.runners import RunnerModule

    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.max_bytes is not None and args.max_bytes < 2:
        raise UsageError(f"--max-bytes must be >= 2, got {args.max_bytes}")
    # under torchrun every rank scores its share of the windows; rank 0 reports the sum
    dist, device = distributed.init_distributed(resolve_device(args.device))
    runner = load_runner(args.checkpoint, device)
    seq_len = runner.max_len
    if args.stride is not None and not 1 <= args.stride <= seq_len:
        raise UsageError(f"--stride must be in [1, {seq_len}] (the model's context), got {args.stride}")
    tokens = as_tokens(open_split(args.data).tokens)[: args.max_bytes]
    with distributed.peer_failures():
        result = evaluate_bpb(
            RunnerModule(runner),
            tokens,
            seq_len,
            stride=args.stride,
            batch_size=args.batch_size,
            device=runner.device,
            progress=sys.stderr.isatty() and not args.json and dist.is_main,
            dist=dist,
        )
        distributed.shutdown(dist)
    if not dist.is_main:
        return 0
    baselines = {} if args.no_baselines else compressor_bpb(tokens.tobytes())
    stride = args.stride or seq_len // 2
    if args.json:
        report = {"checkpoint": args.checkpoint, "data": args.data, "seq_len": seq_len, "stride": stride}
        print(json.dumps({**report, **result.to_dict(), "baselines_bpb": baselines}))
        return 0
    print(f"data         {args.data} ({len(tokens):,} bytes; context {seq_len}, stride {stride})")
    print(f"bits/byte    {result.bpb:.4f}")
    print(f"nats/byte    {result.nats_per_byte:.4f}")
    print(f"bytes scored {result.bytes_scored:,} in {result.seconds:.1f} s ({result.bytes_per_s:,.0f} bytes/s)")
    for name, bpb in baselines.items():
        print(f"{name:<12} {bpb:.4f} bits/byte")
    return 0
