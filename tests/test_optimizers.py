"""Optimizers: which parameters AdamW decays, which ones Muon takes."""

import pytest

from charlm.config import config_from_dict
from charlm.model import ByteLM
from charlm.registry import get_registry


def build(optimizer: str, **model):
    job = config_from_dict(
        {"max_steps": 1, "device": "cpu", "data": {"train": "x.bin"}, "optimizer": optimizer,
         "model": {"d_model": 32, "n_layer": 2, "n_head": 2, "tie_embeddings": False, **model}},
        world_size=1,
    )
    model = ByteLM(job.model, 16)
    return model, get_registry().create("optimizer", job.optimizer, model=model)


def test_adamw_decays_only_block_matrices_and_fuses_on_cpu():
    model, opt = build("adamw")
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in decayed}
    assert names == {n for n, p in model.named_parameters() if p.ndim == 2 and n.startswith(("blocks.", "head."))}
    assert "embed.weight" not in names
    assert opt.defaults["fused"] is True
    assert all(g["base_lr"] == pytest.approx(3e-3) for g in opt.param_groups)


def test_muon_takes_block_matrices_and_adamw_the_rest():
    model, opt = build("muon")
    muon_ids = {id(p) for p in opt.muon.param_groups[0]["params"]}
    muon_names = {n for n, p in model.named_parameters() if id(p) in muon_ids}
    assert muon_names == {n for n, p in model.named_parameters() if n.startswith("blocks.") and p.ndim == 2}
    adamw_ids = {id(p) for g in opt.adamw.param_groups for p in g["params"]}
    assert muon_ids.isdisjoint(adamw_ids) and len(muon_ids | adamw_ids) == len(list(model.parameters()))
