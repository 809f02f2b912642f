"""``charlm data prepare``: files, directories, globs, JSONL and .gz -> train/val splits.

One file is one document, and so is one JSONL record (its ``jsonl_field``). Directories
are walked recursively in sorted order, skipping hidden files and directories; ``.gz``
files are decompressed as they are read. Everything streams: memory holds one chunk of a
document (or one JSONL line), never a whole corpus.

The split is by document, decided by exactly one rule:

- ``val_fraction`` (default 0.1): a seeded random choice of ``round(fraction * n)``
  documents (at least one, and never all); ``0`` writes a train split only;
- ``val_inputs``: the documents of these inputs are the validation split;
- ``val_docs``: these indices into the documents, in input order, are the validation split.

Writes ``OUT/train.bin|.idx``, ``OUT/val.bin|.idx`` and ``OUT/meta.json``; files appear only
once complete, and a failure leaves what was there before.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import zlib
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from charlm.atomic import remove_stale_temps, signals_deferred, write_json_atomic
from charlm.data import FORMAT_VERSION, SplitWriter, idx_path
from charlm.errors import CharLMError, UsageError

CHUNK_BYTES = 1 << 20
DEFAULT_VAL_FRACTION = 0.1
OUTPUT_NAMES = ("train.bin", "train.idx", "val.bin", "val.idx", "meta.json")


def prepare(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    jsonl_field: str = "text",
    separator: int = 0,
    val_fraction: float | None = None,
    seed: int = 0,
    val_inputs: Sequence[str | Path] = (),
    val_docs: Collection[int] = (),
    source: dict | None = None,
) -> dict:
    """Pack ``inputs`` into ``out_dir``; returns what ``meta.json`` holds.

    ``source`` (a data source's provenance) is recorded in ``meta.json`` as is.
    """
    if not 0 <= separator <= 255:
        raise UsageError(f"the separator must be a byte value 0..255, got {separator}")
    rules = [name for name, given in (("--val-fraction", val_fraction is not None), ("--val-inputs", val_inputs), ("--val-docs", val_docs)) if given]
    if len(rules) > 1:
        raise UsageError(f"choose one split rule: {' and '.join(rules)} were both given")
    if val_fraction is not None and not 0 <= val_fraction < 1:
        raise UsageError(f"--val-fraction must be in [0, 1), got {val_fraction}")

    files = resolve_inputs(inputs, "input")
    val_files = resolve_inputs(val_inputs, "--val-inputs") if val_inputs else []
    is_val, split_rule = _split_rule(files, jsonl_field, val_fraction, seed, val_docs, bool(val_files))
    has_val = bool(val_files) or split_rule["rule"] != "none"

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out, OUTPUT_NAMES)  # what an interrupted prepare left half-written
    total = sum(p.stat().st_size for p in files + val_files)
    with (
        tqdm(total=total, unit="B", unit_scale=True, desc="prepare", disable=None) as bar,
        SplitWriter(out / "train.bin", separator) as train,
        SplitWriter(out / "val.bin", separator) if has_val else nullcontext() as val,
    ):
        index = 0
        for path in files:
            for doc in read_documents(path, jsonl_field, bar):
                (val if is_val(index) else train).add(doc)
                index += 1
        for path in val_files:
            for doc in read_documents(path, jsonl_field, bar):
                val.add(doc)
        if train.doc_count == 0:
            raise UsageError("every document went to the validation split; the train split would be empty")
        if has_val and val.doc_count == 0:
            raise UsageError("--val-inputs hold no documents")
        splits = {"train": train.finish(), **({"val": val.finish()} if has_val else {})}
        meta = {
            "format_version": FORMAT_VERSION,
            "separator": separator,
            "sources": [str(p) for p in inputs],
            **({"val_sources": [str(p) for p in val_inputs]} if val_inputs else {}),
            **({"source": source} if source else {}),
            "jsonl_field": jsonl_field,
            "split": split_rule,
            "documents": sum(s["documents"] for s in splits.values()),
            "bytes": sum(s["bytes"] for s in splits.values()),
            **splits,
        }
        with signals_deferred():  # the splits and meta.json change together: a signal waits for all of them
            write_json_atomic(out / "meta.json", meta)  # first: renames cannot fail for a full disk
            train.publish()
            if has_val:
                val.publish()
            else:  # a val split from an earlier run would no longer match meta.json
                for stale in (out / "val.bin", idx_path(out / "val.bin")):
                    stale.unlink(missing_ok=True)
    return meta


def resolve_inputs(specs: Iterable[str | Path], what: str) -> list[Path]:
    """Files named by paths, directories (recursive, sorted) and globs, in the order given."""
    files: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found = list(_walk(path))
            if not found:
                raise UsageError(f"{what} directory {spec} holds no files")
        elif path.is_file():
            found = [path]
        elif any(c in str(spec) for c in "*?["):
            found = sorted(Path(p) for p in glob.glob(str(spec), recursive=True) if Path(p).is_file())
            if not found:
                raise UsageError(f"no files match {what} pattern {str(spec)!r}")
        else:
            raise UsageError(f"{what} {spec}: no such file or directory")
        files += found
    if not files:
        raise UsageError(f"no {what} files given")
    return files


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath, name)


def _is_jsonl(path: Path) -> bool:
    return path.name.endswith((".jsonl", ".jsonl.gz"))


def read_documents(path: Path, jsonl_field: str, progress: tqdm) -> Iterator[Iterable[bytes]]:
    """The documents of one input file, each as chunks of bytes, consumed in order."""
    with open(path, "rb") as raw:
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if path.name.endswith(".gz") else raw
        read = 0

        def advance() -> None:  # progress in bytes of the file on disk, compressed or not
            nonlocal read
            progress.update(raw.tell() - read)
            read = raw.tell()

        if not _is_jsonl(path):
            yield _chunks(stream, path, advance)
            return
        with _reading(path):
            for lineno, line in enumerate(stream, 1):
                if line.strip():
                    yield (_record_text(line, jsonl_field, path, lineno),)
                    advance()


def _chunks(stream, path: Path, advance) -> Iterator[bytes]:
    with _reading(path):
        for chunk in iter(partial(stream.read, CHUNK_BYTES), b""):
            yield chunk
            advance()


@contextmanager
def _reading(path: Path):
    """A file that cannot be read (or a truncated .gz) is a CharLMError naming it."""
    try:
        yield
    except (OSError, EOFError, zlib.error) as exc:
        raise CharLMError(f"cannot read {path}: {exc}") from exc


def _record_text(line: bytes, field: str, path: Path, lineno: int) -> bytes:
    try:
        record = json.loads(line)
    except ValueError as exc:
        raise CharLMError(f"{path}:{lineno}: not a JSON record ({exc})") from exc
    text = record.get(field) if isinstance(record, dict) else None
    if not isinstance(text, str):
        raise CharLMError(f"{path}:{lineno}: the record has no string field {field!r} (choose one with --jsonl-field)")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CharLMError(f"{path}:{lineno}: field {field!r} is not valid Unicode ({exc.reason})") from exc


def count_documents(files: Iterable[Path], jsonl_field: str) -> int:
    """How many documents the inputs hold: a file is one, a JSONL file one per non-blank line."""
    n = 0
    for path in files:
        if not _is_jsonl(path):
            n += 1
            continue
        opener = gzip.open if path.name.endswith(".gz") else open
        with _reading(path), opener(path, "rb") as f:
            n += sum(1 for line in f if line.strip())
    return n


def _split_rule(files, jsonl_field, val_fraction, seed, val_docs, has_val_inputs):
    """``(is_val(document index) -> bool, the rule as recorded in meta.json)``."""
    if has_val_inputs:
        return (lambda i: False), {"rule": "val_inputs"}
    if val_docs:
        n = count_documents(files, jsonl_field)
        bad = sorted(i for i in val_docs if not 0 <= i < n)
        if bad:
            raise UsageError(f"--val-docs {','.join(map(str, bad))}: the inputs hold {n} documents (indices 0..{n - 1})")
        chosen = frozenset(val_docs)
        return chosen.__contains__, {"rule": "val_docs", "val_docs": sorted(chosen)}
    fraction = DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction
    if fraction == 0:
        return (lambda i: False), {"rule": "none"}
    n = count_documents(files, jsonl_field)
    if n < 2:
        raise UsageError(f"--val-fraction {fraction}: the inputs hold {n} document(s); a document-level split needs at least 2 (or use --val-fraction 0)")
    k = min(max(1, round(fraction * n)), n - 1)
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng(seed).choice(n, size=k, replace=False)] = True
    return (lambda i: bool(mask[i])), {"rule": "val_fraction", "val_fraction": fraction, "seed": seed, "val_documents": k}
