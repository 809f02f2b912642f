"""Lossless compression with a byte model: range coding of every byte under its prediction.

The encoder and the decoder run one loop (``_code``): rows of the text read side by side
as in ``charlm.adapt`` (one batch), each chunk prefilled with its context, then one cached
decode step per byte. Only the callback that turns the predicted distribution into a byte
differs: the encoder encodes the known byte, the decoder decodes it. So both sides compute
the same probabilities with the same operations on the same shapes, and with adaptation
the same optimizer steps on the same chunks. ``constriction``'s range coder with a
``Categorical(perfect=False)`` model quantizes each distribution to fixed point
deterministically, and codes the rows' bytes of each step in row order into one stream.

What must match for a file to decompress: the checkpoint (its sha256 is in the header), and
the floating-point arithmetic: the same torch version, CPU kind and thread count (the
thread count is recorded and reused). When they differ the decoded bytes may differ; the
sha256 of the original, also in the header, then fails and no output is written: a clear
error, never wrong bytes.

File format (integers little-endian):

    magic     8 bytes  b"CHARLMZ\\x00"
    version   u16      1
    model     32 bytes sha256 of the checkpoint file
    length    u64      original length in bytes
    sha256    32 bytes sha256 of the original
    options   u32 n, then n bytes of JSON: segments, threads, adapt (null: static coding)
              with its lr/steps/window/params/optimizer, mix (null or absent: no count
              models) with its orders/slot_bits/alpha/lr, window, torch version
    payload   the range coder's words, u32 each
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import numpy as np
import torch

from charlm.adapt import Adapter, AdaptOptions, Reading, auto_segments, check_window, segment_lengths
from charlm.errors import CharLMError, UsageError
from charlm.mixer import ContextMixer, MixOptions

MAGIC = b"CHARLMZ\x00"
VERSION = 1
_FIXED = struct.Struct("<8sH32sQ32sI")  # magic, version, model sha, length, sha256, options size


def file_sha256(path: str | Path) -> bytes:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.digest()


def default_threads() -> int:
    """Two torch threads where two cores are ours: the batch of segments keeps both busy."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    return min(2, cores)


def compress(model, data: bytes, model_sha: bytes, adapt: AdaptOptions | None, window: int = 64,
             segments: int | None = None, threads: int = 1, mix: MixOptions | None = None) -> bytes:
    """``data`` -> a compressed file's bytes; ``adapt=None`` codes with the static model,
    ``mix=None`` with the network's predictions alone (no count models mixed in)."""
    import constriction

    if threads < 1:
        raise UsageError(f"threads must be >= 1, got {threads}")
    segments = auto_segments(len(data)) if segments is None else segments
    if segments < 1:
        raise UsageError(f"segments must be >= 1, got {segments}")
    window = adapt.window if adapt is not None else window
    options = {
        "segments": min(segments, max(1, len(data))),
        "threads": threads,
        "window": window,
        "adapt": adapt.to_dict() if adapt is not None else None,
        "mix": mix.to_dict() if mix is not None else None,
        "torch": torch.__version__,
    }
    encoder = constriction.stream.queue.RangeEncoder()
    family = constriction.stream.model.Categorical(perfect=False)
    tokens = np.frombuffer(data, dtype=np.uint8)

    def encode(reading: Reading, probs: np.ndarray, active: np.ndarray, column: int) -> None:
        encoder.encode(reading.grid[active, column].numpy().astype(np.int32), family, probs[active])

    if data:
        _code(model, len(data), options, encode, tokens)
    header = json.dumps(options, sort_keys=True).encode()
    fixed = _FIXED.pack(MAGIC, VERSION, model_sha, len(data), hashlib.sha256(data).digest(), len(header))
    return fixed + header + encoder.get_compressed().astype("<u4").tobytes()


def decompress(model, blob: bytes, model_sha: bytes) -> bytes:
    """A compressed file's bytes -> the original; raises ``CharLMError`` unless it is exact."""
    import constriction

    length, sha, options, words = read_header(blob, model_sha)
    decoder = constriction.stream.queue.RangeDecoder(words)
    family = constriction.stream.model.Categorical(perfect=False)

    def decode(reading: Reading, probs: np.ndarray, active: np.ndarray, column: int) -> None:
        reading.grid[active, column] = torch.from_numpy(decoder.decode(family, probs[active]).astype(np.int64))

    data = _code(model, length, options, decode).tobytes() if length else b""
    if hashlib.sha256(data).digest() != sha:
        raise CharLMError(
            "decompressed bytes do not match the original's sha256: the file is corrupt, or was written"
            f" under another torch version / CPU kind (compressed with torch {options.get('torch')})"
        )
    return data


def read_header(blob: bytes, model_sha: bytes) -> tuple[int, bytes, dict, np.ndarray]:
    """``(length, sha256, options, payload words)``; a clear error for anything wrong."""
    if len(blob) < _FIXED.size or not blob.startswith(MAGIC):
        raise CharLMError("not a charlm compressed file (bad magic or truncated header)")
    magic, version, model, length, sha, size = _FIXED.unpack_from(blob)
    if version != VERSION:
        raise CharLMError(f"compressed file version {version} is not supported (this charlm reads {VERSION})")
    if model != model_sha:
        raise CharLMError(
            f"compressed with another checkpoint (sha256 {model.hex()[:16]}..., this one is {model_sha.hex()[:16]}...)"
        )
    body = blob[_FIXED.size + size :]
    if len(blob) < _FIXED.size + size or len(body) % 4:
        raise CharLMError("compressed file is truncated")
    try:
        options = json.loads(blob[_FIXED.size : _FIXED.size + size])
        AdaptOptions(**options["adapt"]) if options["adapt"] is not None else None
        MixOptions(**options["mix"]) if options.get("mix") is not None else None
        int(options["segments"]), int(options["threads"]), int(options["window"])
    except (ValueError, KeyError, TypeError, UsageError) as exc:
        raise CharLMError(f"compressed file has a corrupt options header ({exc})") from None
    return length, sha, options, np.frombuffer(body, dtype="<u4").astype(np.uint32)


def _code(model, length: int, options: dict, code_step, tokens: np.ndarray | None = None) -> np.ndarray:
    """The one loop of both sides: ``code_step(reading, probs, active, column)`` codes column
    ``column`` of the rows in ``active`` (the encoder reads it, the decoder writes it)."""
    seq_len = model.max_len
    adapt = AdaptOptions(**options["adapt"]) if options["adapt"] is not None else None
    window = options["window"]
    check_window(window, seq_len)
    segments = int(options["segments"])
    if not 1 <= segments <= length:
        raise CharLMError(f"compressed file has a corrupt options header (segments={segments})")
    reading = Reading(segment_lengths(length, segments), window, seq_len)
    if tokens is not None:
        reading.fill(tokens)
    lengths = np.array(reading.lengths)
    threads = torch.get_num_threads()
    torch.set_num_threads(int(options["threads"]))
    model.eval()
    saved = {name: t.detach().clone() for name, t in model.state_dict().items()} if adapt else None
    adapter = Adapter(model, adapt) if adapt is not None else None
    mix = options.get("mix")  # absent in files written before mixing existed
    mixer = ContextMixer(MixOptions(**mix), len(lengths)) if mix is not None else None
    param = next(model.parameters())
    try:
        for k in range(reading.n_chunks):
            first, ctx = 1 + k * window, reading.context(k)
            with torch.no_grad():
                states = model.init_states(len(lengths), seq_len, param.device, param.dtype)
                logits, states = model(reading.grid[:, first - ctx : first], 0, states)
                for j in range(window):
                    column = first + j
                    active = lengths > column - 1
                    if not active.any():
                        break
                    if mixer is None:
                        probs = torch.softmax(logits[:, -1].double(), dim=-1).numpy()
                    else:
                        probs = mixer.predict(torch.log_softmax(logits[:, -1].double(), dim=-1).numpy())
                    code_step(reading, probs, active, column)
                    if mixer is not None:
                        mixer.update(reading.grid[:, column].numpy(), active)
                    if j < window - 1:
                        logits, states = model(reading.grid[:, column : column + 1], ctx + j, states)
            if adapter is not None:
                adapter.update(*reading.chunk(k))
    finally:
        torch.set_num_threads(threads)
        if saved is not None:
            model.load_state_dict(saved)
    return reading.text()
