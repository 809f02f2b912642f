"""Checkpoints of FSDP runs: torch.distributed.checkpoint (DCP) directories, complete or absent.

``checkpoints/step-NNNNNN.dcp/`` holds DCP's files (``.metadata`` and one ``.distcp`` per
rank: each rank writes its own shards of the weights and optimizer state, nothing is
gathered), ``train_state.pt`` (the rest of the payload: step, data position, RNG, config,
versions; a charlm checkpoint file, read weights-only) and ``MANIFEST.json`` (size and
sha256 of every other file), written last. Every rank writes into a temporary sibling; rank
0 renames it into place once all have finished. A directory that is missing a file or
whose bytes differ from the manifest does not load: ``--resume auto`` falls back to an
older checkpoint as it does for a damaged ``.pt``.

Loading gives the same payload as a ``.pt`` file (whole tensors, torch's optimizer state
dict), so 1-process and DDP runs, ``charlm eval``, ``generate`` and ``export`` read a DCP
directory like a file, and an FSDP run shards either kind (``fsdp.loading_into``).

DCP keeps its ``.metadata`` as a Python pickle: unlike a ``.pt`` file, a DCP directory from
an untrusted source can run code when loaded. The manifest detects damage, not malice.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from charlm import checkpoint as ckpt
from charlm import distributed
from charlm.atomic import write_json_atomic
from charlm.errors import CharLMError, file_errors

SUFFIX = ".dcp"
MANIFEST = "MANIFEST.json"
STATE_FILE = "train_state.pt"


def is_dcp_checkpoint(path: Path) -> bool:
    return path.is_dir() and (path.name.endswith(SUFFIX) or (path / MANIFEST).is_file())


def save(path: Path, payload: dict, model: torch.nn.Module, optimizer, info: distributed.DistInfo) -> Path:
    """Every rank writes its shards of ``model`` and ``optimizer``; rank 0 adds ``payload``
    (without weights) and the manifest, then renames the directory into place."""
    from charlm.fsdp import torch_optimizers

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(distributed.from_main(_fresh_temp(path) if info.is_main else None, info))
    model_state, optimizer_state = get_state_dict(model, torch_optimizers(optimizer))
    with file_errors(path):
        dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=tmp)
    if info.is_main:
        ckpt.save_checkpoint(tmp / STATE_FILE, payload)
        write_json_atomic(tmp / MANIFEST, {"files": {p.name: _digest(p) for p in sorted(tmp.iterdir()) if p.is_file()}})
        _replace_dir(tmp, path)
    distributed.barrier(info)  # the checkpoint is in place on every rank's return
    return path


def _fresh_temp(path: Path) -> str:
    """A new temporary sibling of ``path``, after removing those killed writes left behind (the run lock
    keeps out every other writer)."""
    for stale in path.parent.glob(f".step-*{SUFFIX}.*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    return tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")


def _replace_dir(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` to ``path`` (a directory cannot be renamed over another: the old one steps aside first)."""
    old = path.with_name(f".{path.name}.old.tmp")
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _digest(path: Path) -> dict:
    sha = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
    return {"bytes": path.stat().st_size, "sha256": sha.hexdigest()}


def verify(path: Path) -> None:
    """Every file the manifest lists is there with its size and sha256; one line naming the first that is not."""
    try:
        listed = json.loads((path / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        raise CharLMError(f"{path}: incomplete DCP checkpoint (no readable {MANIFEST}); use an earlier checkpoint") from None
    for name, want in listed.items():
        file = path / name
        if not file.is_file():
            raise CharLMError(f"{path}: DCP checkpoint is missing {name}; use an earlier checkpoint")
        if _digest(file) != want:
            raise CharLMError(f"{path}: DCP checkpoint is corrupted ({name} differs from {MANIFEST}); use an earlier checkpoint")


def load_payload(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """A verified DCP directory -> the payload a ``.pt`` checkpoint holds (whole weights and optimizer state)."""
    from charlm.config import config_from_dict
    from charlm.fsdp import torch_optimizers
    from charlm.model import ByteLM
    from charlm.registry import get_registry

    verify(path)
    payload = ckpt.load_checkpoint(path / STATE_FILE, map_location)
    job = config_from_dict(payload["config"], validate=False)
    with torch.random.fork_rng():  # building a model draws initial weights: the caller's RNG stays as it is
        model = ByteLM(job.model, max_len=job.seq_len)
    optimizer = get_registry().create("optimizer", job.optimizer, model=model)
    model_state, optimizer_state = get_state_dict(model, torch_optimizers(optimizer))
    state = {"model": model_state, "optimizer": optimizer_state}
    try:
        with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load(state, checkpoint_id=path, no_dist=True)
    except Exception as exc:  # DCP wraps a reader's failure in its own exception types
        raise CharLMError(f"{path}: cannot load DCP checkpoint ({type(exc).__name__}: {exc})".splitlines()[0]) from None
    set_state_dict(model, torch_optimizers(optimizer), model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    return {**payload, "model": model.to(map_location).state_dict(), "optimizer": optimizer.state_dict()}
