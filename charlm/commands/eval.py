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
    parser.add_argument(
        "--adapt",
        nargs="*",
        metavar="KEY=VALUE",
        help="also score while learning (lr, steps, window, params, optimizer, segments, reset=none|doc); see charlm.adapt",
    )
    parser.add_argument(
        "--mix",
        nargs="*",
        metavar="KEY=VALUE",
        help="with --adapt: also score mixed with count models (orders, slot_bits, alpha, lr); see charlm.mixer",
    )
    parser.set_defaults(func=run_eval)


def run_eval(args) -> int:
    import torch

    from charlm import distributed
    from charlm.config import resolve_device
    from charlm.data import open_split, verify_split
    from charlm.errors import UsageError
    from charlm.evaluate import as_tokens, compressor_bpb, evaluate_bpb
    from charlm.loading import load_runner
    from charlm.memory_estimate import check_evaluation
    from charlm.runners import RunnerModule

    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.max_bytes is not None and args.max_bytes < 2:
        raise UsageError(f"--max-bytes must be >= 2, got {args.max_bytes}")
    verify_split(args.data, full=True)  # a flipped byte would otherwise skew the figure silently
    # under torchrun every rank scores its share of the windows; rank 0 reports the sum
    dist, device = distributed.init_distributed(resolve_device(args.device))
    runner = load_runner(args.checkpoint, device)
    seq_len = runner.max_len
    model = getattr(runner, "model", None)  # adaptation trains: it needs the model, not a runner's forward
    if args.adapt is not None and not isinstance(model, torch.nn.Module):
        raise UsageError(f"--adapt needs a checkpoint or run directory (a model to train), not {args.checkpoint}")
    if args.mix is not None and args.adapt is None:
        raise UsageError("--mix needs --adapt (it scores in the adaptive reading order)")
    if args.stride is not None and not 1 <= args.stride <= seq_len:
        raise UsageError(f"--stride must be in [1, {seq_len}] (the model's context), got {args.stride}")
    split = open_split(args.data)
    tokens = as_tokens(split.tokens)[: args.max_bytes]
    windows = len(tokens) // (args.stride or max(1, seq_len // 2)) + 1  # a batch never holds more
    job = getattr(runner, "job", None)
    check_evaluation(job and job.model, min(args.batch_size, windows), seq_len, runner.device)
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
    adaptive = None if args.adapt is None else adaptive_report(model, tokens, seq_len, args.adapt, args.mix, split.doc_offsets)
    if args.json:
        report = {"checkpoint": args.checkpoint, "data": args.data, "seq_len": seq_len, "stride": stride}
        print(json.dumps({**report, **result.to_dict(), "baselines_bpb": baselines, "adaptive": adaptive}))
        return 0
    print(f"data         {args.data} ({len(tokens):,} bytes; context {seq_len}, stride {stride})")
    print(f"bits/byte    {result.bpb:.4f}")
    print(f"nats/byte    {result.nats_per_byte:.4f}")
    print(f"bytes scored {result.bytes_scored:,} in {result.seconds:.1f} s ({result.bytes_per_s:,.0f} bytes/s)")
    if adaptive is not None:
        print(f"adaptive     {adaptive['adaptive_bpb']:.4f} bits/byte (static, read the same way: {adaptive['static_bpb']:.4f})")
        if "mixed_bpb" in adaptive:
            print(f"adaptive+mix {adaptive['mixed_bpb']:.4f} bits/byte (count models mixed in, charlm.mixer)")
    for name, bpb in baselines.items():
        print(f"{name:<12} {bpb:.4f} bits/byte")
    return 0


def adaptive_report(model, tokens, seq_len: int, items: list[str], mix_items: list[str] | None = None,
                    doc_offsets=()) -> dict:
    """Bits/byte with and without learning while reading, in ``charlm.adapt``'s order (and,
    with ``mix_items``, learning and mixed with count models). With ``reset=doc`` each
    document (``doc_offsets``: where each starts) is read on its own, from the checkpoint's
    weights and empty count models."""
    import math

    import numpy as np

    from charlm.adapt import adapt_options, auto_segments, parse_key_values, read_costs
    from charlm.errors import UsageError
    from charlm.mixer import mix_options

    mix = None if mix_items is None else mix_options(parse_key_values(mix_items))
    values = parse_key_values(items)
    count = values.pop("segments", None)
    if count is not None and not count.isdigit() or count == "0":
        raise UsageError(f"adapt option segments must be an integer >= 1, got {count!r}")
    reset = values.pop("reset", "none")
    if reset not in ("none", "doc"):
        raise UsageError(f"adapt option reset must be none or doc, got {reset!r}")
    options = adapt_options(values)
    bounds = [0, len(tokens)]
    if reset == "doc":
        bounds = sorted({0, len(tokens), *(int(o) for o in doc_offsets if 0 < o < len(tokens))})
    spans = list(zip(bounds, bounds[1:]))

    def rows(n: int) -> int:
        return min(int(count), n) if count else auto_segments(n)

    def bits(adapt: bool, mix=None) -> float:
        costs = [read_costs(model, tokens[a:b], seq_len, options, adapt, rows(b - a), mix) for a, b in spans]
        return float(np.concatenate(costs).mean()) / math.log(2)

    bpb = {"static_bpb": bits(False), "adaptive_bpb": bits(True)}
    if mix is not None:
        bpb["mixed_bpb"] = bits(True, mix)
        bpb["mix"] = mix.to_dict()
    segments = rows(len(tokens)) if reset == "none" else [rows(b - a) for a, b in spans]  # per document
    return {**bpb, "segments": segments, "reset": reset, "documents": len(spans), **options.to_dict()}
