"""Fixtures shared by tests/: what several files need, built once per session.

The plain helpers they build on (the tiny job, the CLI runners, make_distribution) are in
helpers.py; the one-thread setting for every test is in the repository's conftest.py.
"""

from pathlib import Path

import pytest
import torch
from helpers import fit_text, write_corpus

TEXT = b"the quick brown fox jumps over the lazy dog. "


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """A prepared data directory (train/val .bin/.idx, meta.json) with learnable structure.
    Shared: copy it before damaging it."""
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny model (seq_len 32, d_model 64, 2 layers) trained briefly on a repeated sentence,
    so that its logits are far from uniform."""
    from charlm.checkpoint import save_checkpoint
    from charlm.config import config_from_dict, to_dict
    from charlm.model import ByteLM

    torch.manual_seed(0)
    model_keys = {"d_model": 64, "n_layer": 2, "n_head": 4, "n_kv_head": 2, "tie_embeddings": False}
    job = config_from_dict({"seq_len": 32, "max_steps": 1, "model": model_keys})
    model = ByteLM(job.model, max_len=job.seq_len)
    fit_text(model, TEXT * 40, steps=40, batch=8, lr=3e-3)
    path = tmp_path_factory.mktemp("checkpoint") / "last.pt"
    save_checkpoint(path, {"model": model.state_dict(), "config": to_dict(job)})
    return path
