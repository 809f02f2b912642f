"""Checkpoints: atomic save, retention, safe load, and the RNG states they carry.

A checkpoint is one ``torch.save`` zip holding a dict of plain data and tensors; it is
loaded with ``weights_only=True`` (a checkpoint never runs code) after the zip's CRCs are
checked, so a flipped byte is an error rather than silently wrong weights. RNG states are
stored as tensors and ints for the same reason: no pickled Python objects.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from charlm.atomic import temp_beside
from charlm.errors import CharLMError, file_errors

FORMAT = "charlm-checkpoint"
FORMAT_VERSION = 1
STEP_FILE = re.compile(r"^step-(\d+)\.(pt|dcp)$")  # .dcp: a directory (charlm.dcp_checkpoint)


def capture_rng() -> dict:
    """The torch, numpy, Python (and CUDA) global RNG states, as weights-only-loadable values."""
    _, numpy_keys, numpy_pos, _, _ = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(numpy_keys.astype(np.int64)),
        "numpy_pos": numpy_pos,
        "python": torch.tensor(random.getstate()[1], dtype=torch.int64),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    """Set the global RNGs from ``capture_rng()``'s result (CUDA's only where CUDA is present)."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), int(state["numpy_pos"]), 0, 0.0))
    random.setstate((3, tuple(int(x) for x in state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def step_path(directory: Path, step: int, suffix: str = ".pt") -> Path:
    return Path(directory) / f"step-{step:06d}{suffix}"


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write to a temporary file, flush and fsync it, then rename: a crash keeps the old file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_beside(path)
    try:
        with file_errors(path), tmp:  # a full disk: one line, the previous file kept
            torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **payload}, tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp.name, path)
    except BaseException:
        Path(tmp.name).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def verify_zip(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except zipfile.BadZipFile:
        raise CharLMError(f"{path}: not a charlm checkpoint (not a torch.save zip file, or truncated)") from None
    except (zipfile.LargeZipFile, OSError, EOFError) as exc:
        raise CharLMError(f"{path}: cannot read checkpoint ({exc})") from None
    if bad is not None:
        raise CharLMError(f"{path}: checkpoint is corrupted (CRC mismatch in {bad}); use an earlier checkpoint")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        from charlm.dcp_checkpoint import load_payload

        return load_payload(path, map_location)
    if not path.is_file():
        raise CharLMError(f"{path}: no such checkpoint")
    verify_zip(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message is a page long; its "WeightsUnpickler error" line names the culprit
        lines = [ln.strip() for ln in str(exc).splitlines() if "Unpickler error" in ln] or [type(exc).__name__]
        raise CharLMError(f"{path}: refusing to load: it holds more than plain weights ({lines[0]})") from None
    except Exception as exc:  # a damaged pickle fails in many ways; weights_only means none of them ran code
        raise CharLMError(f"{path}: cannot load checkpoint ({type(exc).__name__}: {exc})".splitlines()[0]) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CharLMError(f"{path}: not a charlm checkpoint")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CharLMError(
            f"{path}: checkpoint format version {payload.get('format_version')} is not supported"
            f" (this charlm reads version {FORMAT_VERSION})"
        )
    return payload


def step_checkpoints(directory: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``step-NNNNNN.pt`` in ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := STEP_FILE.match(p.name))]
    return sorted(found)


def prune_checkpoints(directory: str | Path, keep_last: int) -> None:
    for _, path in step_checkpoints(directory)[:-keep_last]:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def checkpoint_files(directory: str | Path) -> list[Path]:
    """``last.pt``, then the step files (and DCP directories) newest first: the order ``--resume auto`` tries them in."""
    directory = Path(directory)
    candidates = [directory / "last.pt"] + [p for _, p in reversed(step_checkpoints(directory))]
    return [path for path in candidates if path.exists()]


def newest_loadable_checkpoint(
    directory: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[Path | None, dict[str, Any] | None, list[tuple[Path, str]]]:
    """The newest checkpoint in ``directory`` that fully loads (CRCs and ``torch.load``), its
    payload, and ``(path, why)`` for each newer one that did not. ``(None, None, [])`` when
    there is none at all."""
    failures = []
    for path in checkpoint_files(directory):
        try:
            return path, load_checkpoint(path, map_location), failures
        except CharLMError as exc:
            failures.append((path, str(exc)))
    return None, None, failures


def set_aside(path: Path) -> Path:
    """Rename a checkpoint that does not load to ``NAME.damaged``: kept for inspection, out of every later resume and retention."""
    return path.rename(path.with_name(path.name + ".damaged"))


def resume_point(
    resume: str, directory: str | Path, restart: bool = False, map_location: str | torch.device = "cpu"
) -> tuple[Path | None, dict[str, Any] | None, list[str]]:
    """What ``--resume`` continues from: ``(path, payload, warnings)``, or ``(None, None, warnings)`` for step 0.

    A path is loaded as it is. ``auto`` takes the newest checkpoint in ``directory`` that fully
    loads, setting aside (one warning each) the newer ones that do not; with checkpoints there
    but none loadable it refuses, unless ``restart``: damaged files never silently mean step 0.
    """
    if resume != "auto":
        return Path(resume), load_checkpoint(resume, map_location), []
    path, payload, failures = newest_loadable_checkpoint(directory, map_location)
    if path is None and failures and not restart:
        raise CharLMError(f"no checkpoint in {directory} loads ({failures[0][1]}); start again from step 0 with --resume auto --restart")
    return path, payload, [f"warning: {why}; set aside as {set_aside(bad).name}" for bad, why in failures]


def model_from_checkpoint(payload: dict[str, Any], device: str | torch.device = "cpu"):
    """Rebuild the trained model (eval mode) and its job config from a loaded checkpoint."""
    from charlm.config import config_from_dict
    from charlm.model import ByteLM

    job = config_from_dict(payload["config"], validate=False)
    model = ByteLM(job.model, max_len=job.seq_len)
    model.load_state_dict(payload["model"])
    return model.to(device).eval(), job
