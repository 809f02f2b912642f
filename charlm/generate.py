"""Cached, windowed sampling: prefill the prompt once, then decode one byte at a time.

Each block keeps its own state (a KV cache for attention, a recurrent state for an SSM),
allocated once for ``max_context_tokens`` bytes. When the window is full, a context
policy decides what the model keeps seeing:

- ``recompute`` (default): drop the oldest quarter of the window and re-encode the rest
  at fresh positions 0.. in one prefill. The re-encode costs one prefill per
  ``window // 4`` bytes, so the per-byte cost stays flat however long the text grows.
- ``sink``: the same, but the first ``SINK_BYTES`` bytes of the text are always kept in
  front of the recent bytes (StreamingLLM's attention sinks, rebuilt by re-encoding since
  the model never looks inside a block's state).
- ``error``: refuse to run past the window.

A model whose blocks all have ``max_context = None`` (state of fixed size) is never
re-windowed unless ``max_context_tokens`` is given explicitly.

Everything runs through a ``Runner`` (``start`` a window, ``step`` one byte), so a checkpoint
and any exporter's artefact sample alike (``charlm.loading.load_model``).
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator, Sequence

import attrs
import torch

from charlm.errors import CharLMError, UsageError
from charlm.generate_options import POLICIES, sampler_chain
from charlm.interfaces import Runner

SINK_BYTES = 4
START_BYTE = 0  # an empty prompt starts as a new document: 0x00 is the default separator of `data prepare`


# ---------------------------------------------------------------- samplers


class SamplerChain:
    """Runs sampler steps in order; draws from the softmax of the result unless a step picked."""

    def __init__(self, steps: Sequence):
        self.steps = list(steps)

    def __call__(self, logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        for step in self.steps:
            logits = step(logits, generator)
            if logits.dim() == 1:  # a picker (greedy) chose the tokens
                return logits
        return draw(torch.softmax(logits.float(), dim=-1), generator)


def draw(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One token per row of ``probs`` [B, V]: the same tokens, for the same generator state, as
    ``torch.multinomial(probs, 1)``, which draws q ~ Exp(1) and takes argmax(probs / q) for one
    sample; without its input checks, which cost three host syncs per byte."""
    q = torch.empty_like(probs).exponential_(generator=generator)
    return torch.div(probs, q, out=q).argmax(dim=-1)


def build_sampler(sampler=None, **shortcuts) -> SamplerChain:
    """The ``SamplerChain`` of ``sampler_chain(sampler, **shortcuts)``, built from the registry."""
    from charlm.config import resolve_component
    from charlm.registry import get_registry

    registry = get_registry()
    chain = sampler_chain(sampler, **shortcuts)
    return SamplerChain(
        [registry.create("sampler", resolve_component(item, "sampler", f"sampler[{i}]")) for i, item in enumerate(chain)]
    )


# ---------------------------------------------------------------- the window


@attrs.frozen
class Window:
    """How many bytes the state may hold (``size``; None: unbounded) and what to keep when full."""

    size: int | None
    policy: str = "recompute"

    def __attrs_post_init__(self):
        if self.policy not in POLICIES:
            raise UsageError(f"context policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        smallest = SINK_BYTES + 2 if self.policy == "sink" else 2
        if self.size is not None and self.size < smallest:
            raise UsageError(f"max_context_tokens must be >= {smallest} with policy {self.policy!r}, got {self.size}")

    @property
    def keep(self) -> int:
        """Bytes kept after a drop: the window minus its oldest quarter (at least one byte dropped)."""
        return self.size - max(1, self.size // 4)

    def fit(self, seq: torch.Tensor) -> torch.Tensor:
        """``seq`` [B, n] itself when it fits, else the bytes the policy keeps."""
        if self.size is None or seq.size(1) <= self.size:
            return seq
        if self.policy == "error":
            raise CharLMError(
                f"context full: {seq.size(1)} bytes do not fit max_context_tokens={self.size}"
                " (use context policy recompute or sink, or a shorter prompt / --max-new)"
            )
        if self.policy == "sink":
            return torch.cat([seq[:, :SINK_BYTES], seq[:, -(self.keep - SINK_BYTES) :]], dim=1)
        return seq[:, -self.keep :]


# ---------------------------------------------------------------- the loop


@torch.inference_mode()
def sample_tokens(
    runner: Runner,
    prompt: bytes,
    max_new: int,
    sampler,
    window: Window,
    generator: torch.Generator | None = None,
    num_samples: int = 1,
    cache: bool = True,
) -> Iterator[torch.Tensor]:
    """Yield the next byte of every sample (a LongTensor [num_samples]) ``max_new`` times.

    ``cache=False`` re-runs the full forward over the window at every byte (the reference
    the cache must match).
    """
    start = list(prompt) if prompt else [START_BYTE]
    seq = window.fit(torch.tensor([start], dtype=torch.long, device=runner.device).expand(num_samples, -1))

    def encode(seq):  # the next byte's logits after exactly ``seq``, at positions 0..n-1
        return runner.start(seq) if cache else (runner.logits(seq)[:, -1], None)

    logits, state = encode(seq)
    since = []  # the bytes sampled after ``seq``: joined to it only when it is re-encoded
    for i in range(max_new):
        token = sampler(logits.float(), generator)
        yield token
        if i == max_new - 1:
            break
        if cache and window.size is None:  # a fixed-size state: no window to keep or move
            logits, state = runner.step(token, state)
            continue
        full = window.size is not None and seq.size(1) + len(since) == window.size
        since.append(token)
        if full or not cache:  # the window moved (or there is no cache): re-encode what it keeps
            seq = window.fit(torch.cat([seq, torch.stack(since, dim=1).to(seq.device)], dim=1))
            since = []
            logits, state = encode(seq)
        else:
            logits, state = runner.step(token, state)


# ---------------------------------------------------------------- text out


class StopScanner:
    """Collects one sample's bytes, ends it at the first stop string (not included), and
    releases only bytes that can no longer turn out to start a stop string."""

    def __init__(self, stops: Sequence[bytes]):
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.data = bytearray()
        self.released = 0
        self.done = False

    def push(self, byte: int) -> bytes:
        self.data.append(byte)
        # only a match ending at the new byte is new
        tail = bytes(self.data[-(self.hold + 1) :])
        for stop in self.stops:
            if tail.endswith(stop):
                del self.data[len(self.data) - len(stop) :]
                self.done = True
                return self.flush()
        return self._release(len(self.data) - self.hold)

    def flush(self) -> bytes:
        return self._release(len(self.data))

    def _release(self, end: int) -> bytes:
        end = max(end, self.released)
        out = bytes(self.data[self.released : end])
        self.released = end
        return out


class Utf8Writer:
    """Writes bytes to a text stream as UTF-8 decoded incrementally (a character split
    across writes is printed whole, invalid bytes become U+FFFD), or to its binary buffer."""

    def __init__(self, stream, raw: bool = False):
        self.stream = stream
        self.raw = raw
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def write(self, data: bytes, final: bool = False) -> None:
        if self.raw:
            self.stream.buffer.write(data)
        else:
            self.stream.write(self.decoder.decode(data, final=final))
        self.stream.flush()


# ---------------------------------------------------------------- the Python API


class LanguageModel:
    """A trained model ready to sample: ``charlm.load(path).generate("Once upon", max_new=64)``.

    It runs any ``Runner``: a checkpoint's model or any exporter's artefact (``charlm.loading``).
    """

    def __init__(self, runner: Runner):
        self.runner = runner

    @property
    def device(self) -> torch.device:
        return self.runner.device

    @property
    def config(self):
        """The job's ``JobConfig`` when the format keeps one (checkpoints and weight artefacts do)."""
        return self.runner.job

    def window(self, max_context_tokens: int | None = None, policy: str = "recompute") -> Window:
        """The default window is the trained ``seq_len``, or none when the state does not grow."""
        limit = self.runner.max_context
        if max_context_tokens is None:
            return Window(None if limit is None else self.runner.max_len, policy)
        if limit is not None and max_context_tokens > limit:
            raise UsageError(f"max_context_tokens={max_context_tokens} is more than this model's blocks hold ({limit})")
        return Window(max_context_tokens, policy)

    def stream(
        self,
        prompt: str | bytes = b"",
        max_new: int = 256,
        *,
        sampler: Sequence | str | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        min_p: float | None = None,
        seed: int | None = None,
        num_samples: int = 1,
        stop: Sequence[str | bytes] = (),
        max_context_tokens: int | None = None,
        context_policy: str = "recompute",
        cache: bool = True,
        compile: bool = False,
    ) -> Iterator[list[bytes]]:
        """An iterator that yields, after each decoded byte, the bytes each sample releases
        (often b""). Samples end at a stop string (not included) or after ``max_new`` bytes.
        ``sampler`` is a chain (see ``sampler_chain``: ``["top_k:k=40", "top_p:p=0.9"]``), or
        the shortcuts ``temperature`` (default 1; 0 is greedy), ``top_k``, ``top_p``, ``min_p``.
        Arguments are checked here, before the first byte is asked for.
        """
        if max_new < 0:
            raise UsageError(f"max_new must be >= 0, got {max_new}")
        if num_samples < 1:
            raise UsageError(f"num_samples must be >= 1, got {num_samples}")
        prompt = prompt.encode("utf-8", "surrogateescape") if isinstance(prompt, str) else bytes(prompt)
        stops = [s.encode("utf-8", "surrogateescape") if isinstance(s, str) else bytes(s) for s in stop]
        if any(not s for s in stops):
            raise UsageError("a stop string must not be empty")
        window = self.window(max_context_tokens, context_policy)
        if window.policy == "error" and window.size is not None and len(prompt) + max_new - 1 > window.size:
            raise UsageError(
                f"{len(prompt)} prompt bytes + {max_new} new bytes do not fit max_context_tokens={window.size}"
                " with context policy error"
            )
        chain = build_sampler(sampler, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
        if compile:
            self.runner.compile()
        generator = torch.Generator(self.device)
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)
        tokens = sample_tokens(self.runner, prompt, max_new, chain, window, generator, num_samples, cache)
        return self._release(tokens, [StopScanner(stops) for _ in range(num_samples)])

    @staticmethod
    def _release(tokens: Iterator[torch.Tensor], scanners: list[StopScanner]) -> Iterator[list[bytes]]:
        for token in tokens:
            out = [b"" if s.done else s.push(t) for s, t in zip(scanners, token.tolist())]
            if all(s.done for s in scanners):
                yield out
                return
            yield out
        yield [s.flush() for s in scanners]

    def generate(self, prompt: str | bytes = b"", max_new: int = 256, **options) -> str | bytes | list:
        """The continuation of ``prompt`` (same type as the prompt: str is decoded with
        U+FFFD for invalid bytes); a list of them when ``num_samples > 1``. Options as ``stream``."""
        parts = [bytearray() for _ in range(options.get("num_samples", 1))]
        for chunks in self.stream(prompt, max_new, **options):
            for part, chunk in zip(parts, chunks):
                part += chunk
        texts = [bytes(p).decode("utf-8", "replace") if isinstance(prompt, str) else bytes(p) for p in parts]
        return texts if len(texts) > 1 else texts[0]


# bench/decode_limit.py --compile on a 2-core AVX2 CPU: the AOT-compiled static step
# (charlm.static_decode) took 25-42 s to build and saved ~1.8 ms per byte at micro, ~3.7 ms at
# 10.7M, so it pays back after 8,000-24,000 bytes.
COMPILE_MIN_STEPS = 20_000


def should_compile(max_new: int) -> bool:
    """The default of ``--compile``: only when enough decode steps pay back the compile."""
    return max_new >= COMPILE_MIN_STEPS
