"""``charlm data prepare INPUT... --out DIR`` and ``charlm data pull NAME [key=value ...] --out DIR``."""

import argparse
from pathlib import Path

from charlm.errors import UsageError, file_errors


def add_parser(sub):
    parser = sub.add_parser("data", help="pack text into .bin/.idx splits, or fetch a named corpus")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    prep = actions.add_parser(
        "prepare",
        help="pack files, directories, globs, .jsonl and .gz files into train/val splits",
        description="One file, or one JSONL record, is one document; each document is followed by the separator byte.",
    )
    prep.add_argument("inputs", nargs="+", metavar="INPUT", help="file, directory (recursive), glob, .jsonl or .gz")
    _add_split_arguments(prep)
    prep.add_argument("--val-inputs", nargs="+", default=[], metavar="PATH", help="the validation documents, instead of a random split")
    prep.set_defaults(func=run_prepare)

    pull = actions.add_parser(
        "pull",
        help="download a named corpus and pack it like prepare",
        description="Downloads and verifies the corpus into DIR/raw (kept, so a re-run is offline), then packs it like prepare."
        " key=value pairs are the source's options (TOML values, as in a job file), e.g. timeout_s=60.",
    )
    pull.add_argument("name", help="data source (see charlm list-plugins): e.g. shakespeare, tinyshakespeare")
    pull.add_argument("options", nargs="*", default=[], metavar="key=value", help="the source's own options")
    _add_split_arguments(pull)
    pull.add_argument("--val-docs", type=_indices, default=[], metavar="I,J,...", help="indices of the source's documents (in its fixed order) to hold out")
    pull.set_defaults(func=run_pull, overrides=[])  # options after --out arrive as overrides (cli.main)


def _add_split_arguments(parser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="writes DIR/train.bin|.idx, DIR/val.bin|.idx, DIR/meta.json")
    parser.add_argument("--jsonl-field", default="text", metavar="NAME", help="the JSONL field holding the text (default: text)")
    parser.add_argument("--separator", type=_byte, default=0, metavar="BYTE", help="byte value that ends each document: 0..255, or 0x.. (default: 0)")
    parser.add_argument("--val-fraction", type=float, default=None, metavar="F", help="fraction of documents held out for validation, 0 for none (default: 0.1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random split (default: 0)")


def _byte(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        value = -1
    if not 0 <= value <= 255:
        raise argparse.ArgumentTypeError(f"{text!r} is not a byte value (0..255, or hex like 0x0a)")
    return value


def _indices(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of document indices")
    return values


def _prepare(args, inputs, **split) -> None:
    """The packing step of both commands, with the options they share."""
    from charlm.prepare import prepare  # numpy and torch: imported only when packing

    meta = prepare(
        inputs,
        args.out,
        jsonl_field=args.jsonl_field,
        separator=args.separator,
        val_fraction=args.val_fraction,
        seed=args.seed,
        **split,
    )
    _report(args.out, meta)


def run_prepare(args) -> int:
    with file_errors(args.out):
        _prepare(args, args.inputs, val_inputs=args.val_inputs)
    return 0


def run_pull(args) -> int:
    from charlm.atomic import remove_stale_temps
    from charlm.config import resolve_component
    from charlm.options import parse_options
    from charlm.registry import get_registry

    if args.val_docs and args.val_fraction is not None:
        raise UsageError("choose one split rule: --val-fraction and --val-docs were both given")
    options = parse_options(args.options + args.overrides, "data source", "timeout_s=60")
    spec = resolve_component({"kind": args.name, **options}, "data_source", f"data_source.{args.name}")
    source = get_registry().create("data_source", spec)
    with file_errors(args.out):
        raw = Path(args.out) / "raw"
        remove_stale_temps(raw)  # downloads an interrupted pull left half-written
        files = source.fetch(raw)
        _prepare(args, files, val_docs=args.val_docs, source={"name": args.name, **source.provenance()})
    return 0


def _report(out: str, meta: dict) -> None:
    for split in ("train", "val"):
        if split in meta:
            s = meta[split]
            print(f"{Path(out) / s['file']}: {s['documents']} documents, {s['bytes']:,} bytes")
