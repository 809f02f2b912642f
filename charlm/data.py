"""The packed split format and the deterministic dataset that reads it.

A split is a pair of files:

- ``name.bin``: the documents' bytes, each followed by the separator byte (0x00 unless
  ``prepare`` was told otherwise). A document may contain the separator byte itself;
  the index, not the separator, says where documents end.
- ``name.idx``: a 32-byte header, then ``doc_count + 1`` little-endian int64 offsets.
  Header: magic ``b"CHARLMIX"``, uint32 format version (1), uint32 separator byte,
  uint64 ``doc_count``, uint64 ``byte_count`` (the size of ``name.bin``). Offset ``i`` is
  where document ``i`` starts, the last offset is ``byte_count``; document ``i`` is
  ``bin[offsets[i] : offsets[i + 1] - 1]``, its separator is ``bin[offsets[i + 1] - 1]``.

``PackedDataset`` cuts a split into windows of ``seq_len + 1`` bytes. Batch ``k`` of
epoch ``e`` is a pure function of ``(seed, e, k, rank, world_size)``: each epoch shifts
the window grid by a seeded offset and shuffles the windows; rank ``r`` of ``W`` takes
the ``r``-th of every ``W`` consecutive slices of ``batch_size`` windows.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import struct
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
import torch

from charlm.atomic import temp_beside
from charlm.errors import CharLMError

MAGIC = b"CHARLMIX"
FORMAT_VERSION = 1
HEADER = struct.Struct("<8sIIQQ")  # magic, version, separator, doc_count, byte_count
SEPARATOR_CHECKS = 4096  # documents whose trailing separator is checked on open


def idx_path(bin_path: str | Path) -> Path:
    return Path(bin_path).with_suffix(".idx")


# ---------------------------------------------------------------- writing


class SplitWriter:
    """Writes one split to temporary files; ``commit()`` renames them into place.

    Offsets go to disk as they come, so memory stays bounded whatever the corpus size.
    Used as a context manager, an exception removes the temporary files.
    """

    def __init__(self, bin_path: str | Path, separator: int = 0):
        self.bin_path = Path(bin_path)
        self.separator = bytes([separator])
        self.sha256 = hashlib.sha256()
        self.doc_count = 0
        self.byte_count = 0
        self._bin = temp_beside(self.bin_path)
        self._idx = temp_beside(idx_path(self.bin_path))
        self._idx.write(bytes(HEADER.size))  # filled in by commit()
        self._idx.write(struct.pack("<q", 0))

    def add(self, chunks: Iterable[bytes]) -> int:
        """Append one document given as chunks of bytes; returns its length."""
        start = self.byte_count
        for chunk in chunks:
            self._write(chunk)
        self._write(self.separator)
        self.doc_count += 1
        self._idx.write(struct.pack("<q", self.byte_count))
        return self.byte_count - start - 1

    def _write(self, chunk: bytes) -> None:
        self._bin.write(chunk)
        self.sha256.update(chunk)
        self.byte_count += len(chunk)

    def finish(self) -> dict:
        """Finish the header, fsync both (still temporary) files; returns the split's summary."""
        self._idx.seek(0)
        self._idx.write(HEADER.pack(MAGIC, FORMAT_VERSION, self.separator[0], self.doc_count, self.byte_count))
        for tmp in (self._bin, self._idx):
            tmp.flush()
            os.fsync(tmp.fileno())
            tmp.close()
        return {"file": self.bin_path.name, "documents": self.doc_count, "bytes": self.byte_count, "sha256": self.sha256.hexdigest()}

    def publish(self) -> None:
        """Rename the finished files into place."""
        for tmp, final in ((self._bin, self.bin_path), (self._idx, idx_path(self.bin_path))):
            os.replace(tmp.name, final)

    def commit(self) -> dict:
        """``finish()`` and ``publish()``: the split's summary."""
        summary = self.finish()
        self.publish()
        return summary

    def abort(self) -> None:
        for tmp in (self._bin, self._idx):
            Path(tmp.name).unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # flushing the buffer fails again on a full disk
                tmp.close()

    def __enter__(self) -> SplitWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


# ---------------------------------------------------------------- reading


class Split:
    """A memory-mapped split, validated on open (see ``open_split``)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.separator, self.doc_offsets = _read_index(self.path)
        self.tokens = np.memmap(self.path, dtype=np.uint8, mode="r")
        _check_separators(self)

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def doc_count(self) -> int:
        return len(self.doc_offsets) - 1

    def document(self, i: int) -> bytes:
        return self.tokens[self.doc_offsets[i] : self.doc_offsets[i + 1] - 1].tobytes()

    # DataLoader workers started by "spawn" get the path and map the file themselves,
    # instead of a pickled copy of the whole split.
    def __getstate__(self) -> dict:
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"])


def open_split(path: str | Path) -> Split:
    """Open ``name.bin`` and its ``name.idx``; a missing, truncated or mismatched pair is a CharLMError.

    The ``.bin``'s size is checked against ``meta.json`` too (see ``verify_split``).
    """
    verify_split(path, full=False)
    return Split(path)


def verify_split(path: str | Path, full: bool) -> None:
    """Check ``name.bin`` against what ``charlm data prepare`` recorded in the ``meta.json`` beside it.

    Its size always; with ``full`` also its sha256, which reads the whole file and so catches
    a flipped byte that no structural check can. A split without a ``meta.json`` beside it
    (one written by ``SplitWriter`` alone) is checked against its ``.idx`` only.
    """
    path = Path(path)
    recorded = _recorded_split(path)
    if recorded is None:
        return
    fix = "restore it, or re-create the directory with `charlm data prepare`"
    size = path.stat().st_size if path.is_file() else None
    if size is not None and size != recorded["bytes"]:
        raise CharLMError(f"{path}: {size} bytes, but meta.json records {recorded['bytes']}: the file was truncated or replaced; {fix}")
    if full and size is not None:
        digest = file_sha256(path)
        if digest != recorded["sha256"]:
            raise CharLMError(f"{path}: sha256 {digest[:16]}..., but meta.json records {recorded['sha256'][:16]}...: the file is damaged; {fix}")


def split_provenance(path: str | Path) -> dict | None:
    """What ``meta.json`` records of ``name.bin``: its size and sha256, and the corpus's ``source``
    (a data source's provenance: URL, revision, content hashes); ``None`` without a ``meta.json``."""
    path = Path(path)
    recorded = _recorded_split(path)
    if recorded is None:
        return None
    meta = json.loads((path.parent / "meta.json").read_text(encoding="utf-8"))
    return {**recorded, "source": meta.get("source")}


def file_sha256(path: Path, chunk_bytes: int = 1 << 20) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            sha.update(chunk)
    return sha.hexdigest()


def _recorded_split(path: Path) -> dict | None:
    """The ``meta.json`` entry (``file``, ``bytes``, ``sha256``) that describes ``path``, if any."""
    meta_path = path.parent / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CharLMError(f"{meta_path}: unreadable ({exc}); re-create it with `charlm data prepare`") from None
    entries = meta.values() if isinstance(meta, dict) else ()
    for entry in entries:
        if isinstance(entry, dict) and entry.get("file") == path.name:
            if not isinstance(entry.get("bytes"), int) or not isinstance(entry.get("sha256"), str):
                raise CharLMError(f"{meta_path}: the entry for {path.name} lacks its bytes or sha256; re-create it with `charlm data prepare`")
            return entry
    return None


def _read_index(bin_path: Path) -> tuple[int, np.ndarray]:
    index = idx_path(bin_path)
    fix = "re-create it with `charlm data prepare`"
    for p in (bin_path, index):
        if not p.is_file():
            raise CharLMError(f"{p}: no such file; {fix}")
    idx_size, bin_size = index.stat().st_size, bin_path.stat().st_size
    if idx_size < HEADER.size:
        raise CharLMError(f"{index}: truncated ({idx_size} bytes, shorter than the {HEADER.size}-byte header); {fix}")
    with open(index, "rb") as f:
        magic, version, separator, doc_count, byte_count = HEADER.unpack(f.read(HEADER.size))
    if magic != MAGIC:
        raise CharLMError(f"{index}: not a CharLM index (bad magic {magic!r}); {fix}")
    if version != FORMAT_VERSION:
        raise CharLMError(f"{index}: format version {version}, but this charlm reads version {FORMAT_VERSION}; {fix}")
    expected = HEADER.size + 8 * (doc_count + 1)
    if idx_size != expected:
        raise CharLMError(f"{index}: {idx_size} bytes, but its header describes {doc_count} documents ({expected} bytes): truncated or corrupted; {fix}")
    if bin_size != byte_count:
        raise CharLMError(f"{bin_path}: {bin_size} bytes, but {index.name} describes {byte_count}: the pair is truncated or mismatched; {fix}")
    if doc_count == 0:
        raise CharLMError(f"{bin_path}: the split holds no documents; {fix}")
    offsets = np.memmap(index, dtype="<i8", mode="r", offset=HEADER.size)
    if offsets[0] != 0 or offsets[-1] != byte_count or np.any(np.diff(offsets) < 1):
        raise CharLMError(f"{index}: document offsets are corrupted; {fix}")
    return separator, offsets


def _check_separators(split: Split) -> None:
    """A sample of documents must end with the separator: catches a .bin paired with another split's .idx."""
    ends = split.doc_offsets[1:]
    sample = ends[np.linspace(0, len(ends) - 1, num=min(len(ends), SEPARATOR_CHECKS)).astype(np.int64)]
    if np.any(split.tokens[sample - 1] != split.separator):
        raise CharLMError(f"{split.path}: its documents do not end where {idx_path(split.path).name} says: the pair is mismatched; re-create it with `charlm data prepare`")


# ---------------------------------------------------------------- the dataset


class PackedDataset:
    """Deterministic batches of ``seq_len + 1``-byte windows of a split.

    ``x, y = ds.batch(epoch, k)``: LongTensors ``[batch_size, seq_len]``, ``y`` is ``x``
    shifted by one byte. Windows do not overlap (beyond the one byte that ``y`` adds);
    the windows left over after the last full batch of an epoch are skipped that epoch.
    Batches are independent of the split's document boundaries: a window may span two
    documents, with the separator byte between them.

    Batch ``k`` of all ranks together is windows ``[k * B * W, (k + 1) * B * W)`` of the
    epoch's order, and an epoch holds a whole number of optimizer steps of ``accum_steps``
    batches: so the windows of step ``s`` are the same for any world size that keeps the
    global batch (``B * W * accum_steps``), and a saved position resumes on any such world.
    """

    def __init__(
        self, split: Split | str | Path, seq_len: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
        accum_steps: int = 1,
    ):
        self.split = split if isinstance(split, Split) else open_split(split)
        if seq_len < 1 or batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"bad PackedDataset shape: seq_len={seq_len} batch_size={batch_size} rank={rank} world_size={world_size}")
        self.seq_len, self.batch_size, self.seed = seq_len, batch_size, seed
        self.rank, self.world_size = rank, world_size
        n_bytes = len(self.split)
        if n_bytes < seq_len + 1:
            raise CharLMError(f"{self.split.path}: {n_bytes} bytes, fewer than seq_len + 1 = {seq_len + 1}")
        windows = (n_bytes - 1) // seq_len
        # One window is given up, when there are several, so that each epoch can shift the
        # grid by any of seq_len offsets: the bytes at window edges change between epochs.
        self.windows = windows - 1 if windows > 1 else windows
        self.slack = n_bytes - 1 - self.windows * seq_len
        self.step_windows = batch_size * world_size * accum_steps  # windows per optimizer step, all ranks
        self.batches_per_epoch = self.windows // self.step_windows * accum_steps
        if self.batches_per_epoch == 0:
            raise CharLMError(
                f"{self.split.path}: {n_bytes} bytes make {self.windows} windows of seq_len + 1 = {seq_len + 1} bytes, "
                f"fewer than one batch across ranks (batch_size {batch_size} x world_size {world_size})"
            )
        self._arange = np.arange(seq_len, dtype=np.int64)
        self._plan: tuple[int, int, np.ndarray] | None = None  # (epoch, grid offset, window order)

    def _epoch_plan(self, epoch: int) -> tuple[int, np.ndarray]:
        """The epoch's grid offset and window order; the same on every rank and worker."""
        if self._plan is None or self._plan[0] != epoch:
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, epoch])))
            offset = int(rng.integers(0, self.slack + 1))
            order = np.arange(self.windows, dtype=np.int32 if self.windows < 2**31 else np.int64)
            rng.shuffle(order)
            self._plan = (epoch, offset, order)
        return self._plan[1], self._plan[2]

    def batch(self, epoch: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if epoch < 0 or not 0 <= k < self.batches_per_epoch:
            raise IndexError(f"batch ({epoch}, {k}) out of range (batches_per_epoch={self.batches_per_epoch})")
        offset, order = self._epoch_plan(epoch)
        first = (k * self.world_size + self.rank) * self.batch_size
        starts = offset + order[first : first + self.batch_size].astype(np.int64) * self.seq_len
        positions = starts[:, None] + self._arange
        x = torch.from_numpy(self.split.tokens[positions].astype(np.int64))
        y = torch.from_numpy(self.split.tokens[positions + 1].astype(np.int64))
        return x, y

    def loader(self, num_workers: int = 0, start: tuple[int, int] | Mapping = (0, 0)) -> BatchLoader:
        """Batches from ``start`` on, forever across epochs; the same stream for any ``num_workers``.

        ``start`` is ``(epoch, k)`` or a ``BatchLoader.state_dict()`` saved in a checkpoint.
        """
        if isinstance(start, Mapping):
            start = self._position_from_state(start)
        epoch, k = start
        if epoch < 0 or not 0 <= k < self.batches_per_epoch:
            raise CharLMError(f"cannot start the data stream at batch ({epoch}, {k}): an epoch has {self.batches_per_epoch} batches")
        return BatchLoader(self, epoch * self.batches_per_epoch + k, num_workers)

    def identity(self) -> dict:
        """What a saved position is only valid for. Not the rank: every rank is at the same
        position, so the one checkpoint rank 0 writes resumes them all."""
        return {
            "seed": self.seed,
            "seq_len": self.seq_len,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "windows": self.windows,
            "step_windows": self.step_windows,
        }

    def _position_from_state(self, state: Mapping) -> tuple[int, int]:
        """The saved ``(epoch, batch)`` in this stream's batches: the world size and micro-batch may
        differ when the global batch is the same (older positions lack ``step_windows``)."""
        saved = {**self.identity(), **state}  # older positions lack step_windows: taken as this one's
        changed = [key for key, value in self.identity().items() if saved[key] != value]
        consumed = int(state["batch"]) * int(state["batch_size"]) * int(state["world_size"])  # windows, all ranks
        batch, rest = divmod(consumed, self.batch_size * self.world_size)
        if rest or set(changed) - {"batch_size", "world_size"}:
            diff = ", ".join(f"{key} {saved[key]} -> {self.identity()[key]}" for key in changed)
            raise CharLMError(f"the saved data position belongs to another data stream ({diff}); it cannot be resumed exactly")
        return int(state["epoch"]), batch


class BatchLoader:
    """An endless iterator of ``(x, y)``; ``position`` is the ``(epoch, k)`` it yields next.

    Workers prefetch ahead, but the position counts only the batches handed out, so
    ``state_dict()`` taken after a training step resumes exactly at the next batch.
    """

    def __init__(self, dataset: PackedDataset, first: int, num_workers: int):
        self.dataset = dataset
        self._next = first
        loader = torch.utils.data.DataLoader(
            _BatchStream(dataset, first),
            batch_size=None,
            num_workers=num_workers,
            # DataLoader draws its base seed from this generator; without one it would
            # consume the global torch RNG and a resumed run would drift from the original.
            generator=torch.Generator().manual_seed(dataset.seed),
        )
        self._batches = iter(loader)

    @property
    def position(self) -> tuple[int, int]:
        return divmod(self._next, self.dataset.batches_per_epoch)

    def state_dict(self) -> dict:
        epoch, k = self.position
        return {"epoch": epoch, "batch": k, **self.dataset.identity()}

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        batch = next(self._batches)
        self._next += 1
        return batch


class _BatchStream(torch.utils.data.IterableDataset):
    """Global batch ``g`` comes from worker ``g % num_workers``; the DataLoader takes one
    batch from each worker in turn, so the stream is the same for any number of workers."""

    def __init__(self, dataset: PackedDataset, first: int):
        self.dataset, self.first = dataset, first

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        ds = self.dataset
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        seeded_epoch = None
        g = self.first + worker
        while True:
            epoch, k = divmod(g, ds.batches_per_epoch)
            if info is not None and epoch != seeded_epoch:
                _seed_worker(ds.seed, epoch, ds.rank, worker)
                seeded_epoch = epoch
            yield ds.batch(epoch, k)
            g += workers


def _seed_worker(seed: int, epoch: int, rank: int, worker: int) -> None:
    """Anything random in a worker depends only on (seed, epoch, rank, worker id)."""
    state = np.random.SeedSequence([seed, epoch, rank, worker]).generate_state(2)
    torch.manual_seed(int(state[0]))
    np.random.seed(int(state[1]))
    random.seed(int(state[1]))
