"""``charlm generate --checkpoint C --prompt TEXT``: sample bytes, streamed to stdout.

The sampler is a chain of sampler plugins, ``--sampler KIND[:key=value,...]`` applied in
order (``--sampler top_k:k=40 --sampler temperature:value=0.8``), or the shortcut flags
``--temperature``, ``--top-k``, ``--top-p``, ``--min-p``; not both.
"""

import argparse
import sys
import time

from charlm.generate_options import POLICIES, SHORTCUTS


def add_parser(sub):
    parser = sub.add_parser(
        "generate",
        help="sample text from a checkpoint or artefact",
        description=__doc__.split("\n\n", 1)[1].replace("``", ""),
    )
    parser.add_argument(
        "--checkpoint", required=True, metavar="PATH", help="a checkpoint (.pt), a run directory, or any exporter's artefact"
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--prompt", help="the text to continue (default: stdin when piped, else empty)")
    source.add_argument("--prompt-file", help="read the prompt's bytes from a file")
    parser.add_argument("--max-new", type=int, default=256, help="bytes to generate per sample (default 256)")
    parser.add_argument(
        "--sampler",
        action="append",
        metavar="KIND[:key=value,...]",
        help="a sampler plugin and its options (TOML values), e.g. top_k:k=40; repeatable, applied in order"
        " (see charlm list-plugins); replaces the shortcut flags below",
    )
    parser.add_argument("--temperature", type=float, help="0 is greedy (default 1.0)")
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
        help="compile the decode step: ahead of time (AOTInductor) for the built-in transformer, else torch.compile"
        " (default: when generating enough bytes to pay back the compile, 20,000)",
    )
    parser.add_argument("--device", default="auto", help='"auto" (default), "cpu", "cuda", "cuda:N", "mps"')
    parser.add_argument(
        "--timings",
        action="store_true",
        help="print to stderr the seconds spent loading, until the first new byte (the prefill; with --compile, the"
        " build) and in all, and the bytes/s after the first",
    )
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


def sampler_flags(args) -> dict:
    """``sampler=`` for ``LanguageModel.stream``: the ``--sampler`` chain or the shortcut flags."""
    from charlm.errors import UsageError

    shortcuts = {name: getattr(args, name) for name in SHORTCUTS}
    given = [f"--{name.replace('_', '-')}" for name, value in shortcuts.items() if value is not None]
    if args.sampler and given:
        raise UsageError(
            f"--sampler cannot be combined with {', '.join(given)}: add them to the chain,"
            " e.g. --sampler temperature:value=0.8 --sampler top_k:k=40"
        )
    return {"sampler": args.sampler} if args.sampler else shortcuts


def run_generate(args) -> int:
    from charlm.generate import build_sampler, should_compile
    from charlm.loading import load_model
    from charlm.memory_estimate import check_generation

    prompt = read_prompt(args)
    sampler = sampler_flags(args)
    build_sampler(**sampler)  # a bad chain fails before the model loads
    started = time.perf_counter()
    lm = load_model(args.checkpoint, args.device)
    loaded = time.perf_counter()
    job = getattr(lm.runner, "job", None)
    held = len(prompt) + args.max_new if args.num_samples > 1 else 0  # a batch is printed whole
    prefill = min(max(len(prompt), 1), lm.runner.max_len)  # the first pass reads the prompt's window
    check_generation(job and job.model, args.num_samples, lm.runner.max_len, prefill, held, lm.device)
    compile = should_compile(args.max_new) if args.compile is None else args.compile
    chunks = lm.stream(
        prompt,
        args.max_new,
        **sampler,
        seed=args.seed,
        num_samples=args.num_samples,
        stop=args.stop,
        max_context_tokens=args.max_context_tokens,
        context_policy=args.context_policy,
        compile=compile,
    )
    ready = time.perf_counter()
    first: list[float] = []  # when the first byte came: the prompt's prefill (and a compiled step's build) before it
    new_bytes = write_samples(args, prompt, _mark_first(chunks, first))
    if args.timings:
        end = time.perf_counter()
        print(timings_line(loaded - started, ready, first, end, new_bytes, args.num_samples, compile), file=sys.stderr)
    return 0


def _mark_first(chunks, first: list[float]):
    for chunk in chunks:
        if not first:
            first.append(time.perf_counter())
        yield chunk


def timings_line(
    load: float, ready: float, first: list[float], end: float, new_bytes: int, samples: int, compiled: bool
) -> str:
    """``--timings``: the rate leaves out each sample's first byte and the wait for it."""
    line = f"timings: load {load:.2f} s, {new_bytes:,} new bytes in {end - ready:.4f} s"
    if not first:
        return line
    waited_for = "the prompt's prefill" + (" and the compile" if compiled else "")
    line += f", the first after {first[0] - ready:.4f} s ({waited_for})"
    after = new_bytes - samples
    if after > 0 and end > first[0]:
        line += f", then {after / (end - first[0]):,.1f} bytes/s"
    return line


def write_samples(args, prompt: bytes, chunks) -> int:
    """Print the samples (one streamed as it comes, a batch each whole); the new bytes printed."""
    from charlm.generate import Utf8Writer

    out = Utf8Writer(sys.stdout, raw=args.raw)
    echo = b"" if args.no_echo else prompt
    if args.num_samples == 1:
        out.write(echo)
        new_bytes = 0
        for chunk in chunks:
            out.write(chunk[0])
            new_bytes += len(chunk[0])
        out.write(b"\n" if not args.raw else b"", final=True)
        return new_bytes
    samples = [bytearray() for _ in range(args.num_samples)]
    for chunk in chunks:
        for sample, part in zip(samples, chunk):
            sample += part
    for i, sample in enumerate(samples):
        if not args.raw:
            out.write(f"--- sample {i + 1} ---\n".encode())
        out.write(echo + bytes(sample))
        out.write(b"\n" if not args.raw else b"", final=True)
    return sum(map(len, samples))
