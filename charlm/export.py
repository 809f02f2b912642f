"""The export driver: write an artefact with an exporter plugin, load it back, prove it.

Every export is validated (unless asked not to): the artefact is loaded by its own exporter
and run next to the source model on the same bytes, a fixed sample of the val split or, with
no split given, seeded random bytes. Gates decide the exit code:

- an exact format (fp32 weights, a traced or exported program): max |logit diff| <= 1e-4;
- a lossy one (int8, bf16): bpb delta <= 0.01 bits, mean KL(source || export) <= 5e-3 nats,
  top-1 agreement of the next-byte distributions >= 98%.

Greedy decoding over 256 bytes and decode speed are reported, not gated: one flipped argmax
sends two greedy texts apart, and speed depends on the machine.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from charlm.atomic import remove_stale_temps, signals_deferred, write_json_atomic
from charlm.errors import CharLMError, UsageError, file_errors, first_line
from charlm.runners import ModelRunner

GATES = {  # name -> (default bound, applies to exact formats, direction)
    "max_logit_diff": (1e-4, True, "<="),
    "bpb_delta": (0.01, False, "<="),
    "kl": (5e-3, False, "<="),
    "top1": (0.98, False, ">="),
}
SAMPLE_WINDOWS = 16  # windows of the trained context scored by both models
SAMPLE_SEED = 1234
GREEDY_BYTES = 256
PROMPT_BYTES = 16


# ---------------------------------------------------------------- running an artefact


class LogitsOnly(nn.Module):
    """The full-sequence forward from position 0, without states: what graph exporters trace."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(idx)[0]


def greedy_decode(runner, prompt: torch.Tensor, n: int) -> tuple[list[int], float]:
    """``n`` greedy bytes after ``prompt`` [1, P] and the seconds they took.

    When the window is full, the newest three quarters are re-encoded from position 0 (the
    ``recompute`` policy of ``charlm generate``), the same way for every runner, so that
    exact artefacts decode exactly the source's bytes.
    """
    window = runner.max_len
    context = prompt[:, -window:]
    out: list[int] = []
    t0 = time.perf_counter()
    logits, state = runner.start(context)
    for _ in range(n):
        token = logits.argmax(dim=-1).cpu()
        out.append(int(token[0]))
        context = torch.cat([context, token.view(1, 1)], dim=1)
        if context.shape[1] >= window:  # no room for the next byte
            context = context[:, -max(2, 3 * window // 4) :]
            logits, state = runner.start(context)
        else:
            logits, state = runner.step(token, state)
    return out, time.perf_counter() - t0


# ---------------------------------------------------------------- validation


def validation_sample(max_len: int, data: str | None) -> tuple[torch.Tensor, str]:
    """[SAMPLE_WINDOWS, L + 1] bytes (inputs and next-byte targets) and where they come from."""
    length = max_len + 1
    if data is None:
        generator = torch.Generator().manual_seed(SAMPLE_SEED)
        return torch.randint(0, 256, (SAMPLE_WINDOWS, length), generator=generator), f"random bytes (seed {SAMPLE_SEED})"
    from charlm.data import open_split

    tokens = open_split(data).tokens
    if len(tokens) < length:
        raise CharLMError(f"{data}: {len(tokens)} bytes, fewer than one window of {length}")
    starts = np.linspace(0, len(tokens) - length, num=SAMPLE_WINDOWS).astype(np.int64)  # spread over the split
    windows = np.stack([np.asarray(tokens[s : s + length]) for s in starts])
    return torch.from_numpy(windows.astype(np.int64)), f"{data} ({SAMPLE_WINDOWS} windows of {max_len} bytes)"


@attrs.define
class Report:
    format: str
    artifact: str
    sample: str
    exact: bool
    metrics: dict[str, Any]
    gates: dict[str, dict] = attrs.Factory(dict)

    @property
    def passed(self) -> bool:
        return all(g["passed"] for g in self.gates.values())

    def to_dict(self) -> dict:
        return {**attrs.asdict(self), "passed": self.passed}

    def table(self) -> str:
        m = self.metrics
        rows = [
            ("bits/byte", f"{m['bpb_source']:.4f}", f"{m['bpb_export']:.4f}", f"{m['bpb_delta']:+.5f}"),
            ("max |logit diff|", "", "", f"{m['max_logit_diff']:.3g}"),
            ("KL(source||export)", "", "", f"{m['kl']:.3g} nats"),
            ("top-1 agreement", "", "", f"{100 * m['top1']:.2f}%"),
            ("greedy agreement", "", "", f"{m['greedy_agree']}/{m['greedy_bytes']} bytes"),
            ("file size", _mb(m["fp32_weight_bytes"]), _mb(m["file_bytes"]), f"{m['size_ratio']:.3f}x fp32"),
            ("decode bytes/s", f"{m['decode_source']:,.0f}", f"{m['decode_export']:,.0f}", f"{m['decode_ratio']:.2f}x"),
        ]
        lines = [f"validation of {self.artifact} ({self.format}) on {self.sample}"]
        lines.append(f"{'':<20} {'source':>10} {'export':>10}  delta / ratio")
        lines += [f"{a:<20} {b:>10} {c:>10}  {d}" for a, b, c, d in rows]
        for name, g in self.gates.items():
            verdict = "ok  " if g["passed"] else "FAIL"
            lines.append(f"gate {verdict} {name} = {g['value']:.6g} (must be {g['op']} {g['bound']:g})")
        lines.append("validation passed" if self.passed else "validation FAILED")
        return "\n".join(lines)


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def weight_bytes_fp32(model: torch.nn.Module) -> int:
    """What the model's weights take as float32 (the size artefacts are compared with)."""
    return 4 * sum(t.numel() for t in model.state_dict().values())


def validate(source: torch.nn.Module, runner, path: Path, fmt: str, exact: bool, data: str | None = None,
             tolerances: dict[str, float] | None = None) -> Report:
    """Compare ``runner`` (the loaded artefact) with ``source`` on a fixed sample; gate the result."""
    reference = ModelRunner(source)
    windows, where = validation_sample(source.max_len, data)
    x, y = windows[:, :-1], windows[:, 1:]
    with torch.inference_mode():
        ref = reference.logits(x).cpu().double()
        got = runner.logits(x).cpu().double()
    if got.shape != ref.shape:
        raise CharLMError(f"{path}: the artefact returns logits of shape {tuple(got.shape)}, expected {tuple(ref.shape)}")
    ref_logp, got_logp = F.log_softmax(ref, -1), F.log_softmax(got, -1)
    bpb_source = F.nll_loss(ref_logp.flatten(0, 1), y.flatten()).item() / math.log(2)
    bpb_export = F.nll_loss(got_logp.flatten(0, 1), y.flatten()).item() / math.log(2)
    kl = (ref_logp.exp() * (ref_logp - got_logp)).sum(-1).mean().item()
    prompt = windows[:1, :PROMPT_BYTES]
    for warm in (reference, runner):  # first calls pay for allocation and kernel selection
        greedy_decode(warm, prompt, 8)
    ref_bytes, ref_s = greedy_decode(reference, prompt, GREEDY_BYTES)
    got_bytes, got_s = greedy_decode(runner, prompt, GREEDY_BYTES)
    agree = next((i for i, (a, b) in enumerate(zip(ref_bytes, got_bytes)) if a != b), GREEDY_BYTES)
    fp32_bytes, file_bytes = weight_bytes_fp32(source), artifact_size(path)
    metrics = {
        "bpb_source": bpb_source,
        "bpb_export": bpb_export,
        "bpb_delta": bpb_export - bpb_source,
        "max_logit_diff": (got - ref).abs().max().item(),
        "kl": kl,
        "top1": (ref.argmax(-1) == got.argmax(-1)).double().mean().item(),
        "greedy_agree": agree,
        "greedy_bytes": GREEDY_BYTES,
        "file_bytes": file_bytes,
        "fp32_weight_bytes": fp32_bytes,
        "size_ratio": file_bytes / fp32_bytes,
        "decode_source": GREEDY_BYTES / ref_s,
        "decode_export": GREEDY_BYTES / got_s,
        "decode_ratio": ref_s / got_s,
    }
    report = Report(fmt, str(path), where, exact, metrics)
    for name, (default, for_exact, op) in GATES.items():
        if for_exact == exact:
            bound = (tolerances or {}).get(name, default)
            value = metrics[name]
            passed = value <= bound if op == "<=" else value >= bound
            report.gates[name] = {"value": value, "bound": bound, "op": op, "passed": bool(passed)}
    return report


def artifact_size(path: Path) -> int:
    """Bytes of the artefact (a directory artefact counts every file in it)."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _move_into_place(partial: Path, out: Path) -> None:
    """Rename a finished artefact (a file, or a directory of files) over ``out``."""
    if out.exists() and (out.is_dir() or partial.is_dir()):  # a rename replaces only a file by a file
        old = out.with_name(f".{out.name}.old")
        _remove(old)
        os.replace(out, old)
        os.replace(partial, out)
        _remove(old)
    else:
        os.replace(partial, out)


def report_path(path: Path) -> Path:
    return path.with_name(path.name + ".report.json")


# ---------------------------------------------------------------- the driver


def parse_tolerances(items: list[str]) -> dict[str, float]:
    """``["kl=1e-2", "top1=0.95"]`` -> ``{"kl": 0.01, "top1": 0.95}``; names are the gates'."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name.strip() not in GATES:
            raise UsageError(f"--tolerance {item!r}: expected NAME=VALUE with NAME one of {', '.join(GATES)}")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise UsageError(f"--tolerance {item!r}: {value!r} is not a number") from None
    return out


def make_exporter(fmt: str, options: dict | None = None):
    """The exporter named ``fmt``, built with its plugin's options (``{"group_size": 32}``)."""
    from charlm.config import resolve_component
    from charlm.registry import get_registry

    spec = resolve_component({"kind": fmt, **(options or {})}, "exporter", "export")
    return get_registry().create("exporter", spec)


def export(fmt: str, checkpoint: str | Path, out: str | Path, options: dict | None = None, validate_after: bool = True,
           tolerances: dict[str, float] | None = None, data: str | None = None) -> Report | None:
    """Export ``checkpoint`` as ``fmt`` to ``out``; validate it unless told not to.

    ``checkpoint`` is a checkpoint or a run directory. Returns the report (also written as
    JSON beside the artefact), or ``None`` without validation. The artefact is written beside
    ``out`` and renamed into place once complete.
    """
    from charlm.loading import checkpoint_path, load_checkpoint_model, open_artefact

    exporter = make_exporter(fmt, options)
    out = Path(out)
    model, job = load_checkpoint_model(checkpoint_path(checkpoint), "cpu")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial{exporter.suffix}")
    remove_stale_temps(out.parent, [out.name, partial.name, report_path(out).name])  # left by a killed export
    _remove(partial)  # left by a crash
    try:
        try:
            with file_errors(out):  # a full disk is the user's to fix, not a failed exporter
                exporter.export(model, job, partial)
        except CharLMError:
            raise
        except Exception as exc:  # torch.export / ONNX failures run to pages; the first line names the cause
            raise CharLMError(f"{fmt} export of {checkpoint} failed: {type(exc).__name__}: {first_line(exc)}") from exc
        report = None
        if validate_after:  # before the rename: an artefact appears in place only with its report
            runner = open_artefact(fmt, exporter, partial, torch.device("cpu"))
            report = validate(model, runner, partial, fmt, exporter.exact, data, tolerances)
            report.artifact = str(out)
        with file_errors(out), signals_deferred():
            _move_into_place(partial, out)
            if report is not None:
                write_json_atomic(report_path(out), report.to_dict())
            else:  # an earlier artefact's report does not describe this one
                report_path(out).unlink(missing_ok=True)
    finally:
        _remove(partial)
    return report
