"""``charlm generate --checkpoint C --prompt TEXT``: sample bytes, streamed to stdout."""

import argparse
import sys

from charlm.generate import POLICIES


def add_parser(sub):
    parser = sub.add_parser("generate", help="sample text from a checkpoint")
    parser.add_argument("--checkpoint", required=True, help="a checkpoint (.pt), or an int8 or safetensors export of one")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--prompt", help="the text to continue (default: stdin when piped, else empty)")
    source.add_argument("--prompt-file", help="read the prompt's bytes from a file")
    parser.add_argument("--max-new", type=int, default=256, help="bytes to generate per sample (default 256)")
    parser.add_argument("--temperature", type=float, default=1.0, help="0 is greedy (default 1.0)")
    parser.add_argument("--top-k", type=int, help="keep the k most likely bytes")
    parser.add_argument("--top-p", type=float, help="keep the smallest set of bytes with probability mass >= p")
    parser.add_argument("--min-p", type=float, help="keep bytes at least p times as likely as the best")
    parser.add_argument("--seed", type=int, help="same seed, same output (default: random)")
    parser.add_argument("--num-samples", type=int, default=1, help="samples drawn as one batch (default 1)")
    parser.add_argument("--stop", action="append", default=[], metavar="STRING", help="end a sample here (repeatable)")
    parser.add_argument("--max-context-tokens", type=int, help="bytes the state may hold (default: trained seq_len)")
    parser.add_argument("--context-policy", choices=POLICIES, default="recompute", help="when the window is full")
    parser.add_argument("--raw", action="store_true", help="write the bytes untouched instead of decoding UTF-8")
    parser.add_argument("--no-echo", action="store_true", help="print only the continuation, not the prompt")
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile the decode step (default: when generating enough bytes to pay back the compile)",
    )
    parser.add_argument("--device", default="auto", help='"auto" (default), "cpu", "cuda", "cuda:N", "mps"')
    parser.set_defaults(func=run_generate)


def read_prompt(args) -> bytes:
    from charlm.errors import UsageError

    if args.prompt is not None:
        return args.prompt.encode("utf-8", "surrogateescape")  # argv bytes come back exactly
    if args.prompt_file is not None:
        try:
            with open(args.prompt_file, "rb") as f:
                return f.read()
        except OSError as exc:
            raise UsageError(f"--prompt-file: cannot read {args.prompt_file}: {exc.strerror or exc}") from None
    if sys.stdin is None or sys.stdin.isatty():
        return b""
    return sys.stdin.buffer.read()


def run_generate(args) -> int:
    from charlm.generate import Utf8Writer, load_model, should_compile

    prompt = read_prompt(args)
    lm = load_model(args.checkpoint, args.device)
    compile = should_compile(args.max_new) if args.compile is None else args.compile
    chunks = lm.stream(
        prompt,
        args.max_new,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        min_p=args.min_p,
        seed=args.seed,
        num_samples=args.num_samples,
        stop=args.stop,
        max_context_tokens=args.max_context_tokens,
        context_policy=args.context_policy,
        compile=compile,
    )
    out = Utf8Writer(sys.stdout, raw=args.raw)
    echo = b"" if args.no_echo else prompt
    if args.num_samples == 1:  # stream as it comes
        out.write(echo)
        for chunk in chunks:
            out.write(chunk[0])
        out.write(b"\n" if not args.raw else b"", final=True)
        return 0
    samples = [bytearray() for _ in range(args.num_samples)]  # a batch: print each sample whole
    for chunk in chunks:
        for sample, part in zip(samples, chunk):
            sample += part
    for i, sample in enumerate(samples):
        if not args.raw:
            out.write(f"--- sample {i + 1} ---\n".encode())
        out.write(echo + bytes(sample))
        out.write(b"\n" if not args.raw else b"", final=True)
    return 0
