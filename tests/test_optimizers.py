"""Optimizers: which parameters AdamW decays, which ones Muon takes, lazy n-gram updates."""

import pytest
import torch

from charlm.config import config_from_dict
from charlm.model import ByteLM
from charlm.registry import get_registry
from charlm.train_step import clip_grad_norm


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


def test_lazy_ngram_update_moves_only_the_rows_a_batch_used():
    opt_lazy_cfg = {"kind": "muon", "adamw": {"ngram_update": "lazy", "ngram_lr": 0.05}}
    model, opt = build(opt_lazy_cfg, ngram_buckets=[64, 128])
    assert all(table.sparse for table in model.ngram.tables)
    assert opt.ngram.param_groups[0]["base_lr"] == pytest.approx(0.05)
    torch.nn.init.normal_(model.head.weight)  # a zero head passes no gradient back
    before = [t.weight.detach().clone() for t in model.ngram.tables]
    logits, _ = model(torch.randint(0, 256, (2, 16)))
    logits.sum().backward()
    used = [t.weight.grad.coalesce().indices()[0] for t in model.ngram.tables]
    opt.step()
    for table, old, rows in zip(model.ngram.tables, before, used):
        changed = (table.weight.detach() != old).any(dim=1).nonzero().flatten()
        assert set(changed.tolist()) == set(rows.tolist()) and 0 < len(rows) < table.num_embeddings
    # the chain's state round-trips into a fresh optimizer of the same options, and refuses another layout
    _, fresh = build(opt_lazy_cfg, ngram_buckets=[64, 128])
    fresh.load_state_dict(opt.state_dict())
    assert set(opt.state_dict()) == {"muon", "adamw", "ngram"}
    with pytest.raises(ValueError, match="optimizer state holds"):
        fresh.load_state_dict({"muon": {}, "adamw": {}})


def test_clipping_sparse_gradients_matches_the_dense_clip():
    idx = torch.randint(0, 256, (2, 16))
    grads = {}
    for sparse in (False, True):
        torch.manual_seed(0)  # the same weights both times
        model, _ = build("adamw", ngram_buckets=[64, 128])
        for table in model.ngram.tables:
            table.sparse = sparse
            torch.nn.init.normal_(table.weight)
        torch.nn.init.normal_(model.head.weight)
        logits, _ = model(idx)
        logits.pow(2).sum().backward()
        norm = clip_grad_norm(model.parameters(), 0.5)
        grads[sparse] = (norm, [p.grad.to_dense() for p in model.parameters()])
    torch.testing.assert_close(grads[True][0], grads[False][0])
    assert grads[True][0] > 0.5  # the clip scaled the gradients
    for a, b in zip(grads[True][1], grads[False][1]):
        torch.testing.assert_close(a, b)


def test_lazy_adam_follows_sparse_adam():
    from charlm.builtin.lazy_adam import LazyAdam

    torch.manual_seed(0)
    tables = [torch.nn.Embedding(50, 8, sparse=True) for _ in range(2)]
    tables[1].load_state_dict(tables[0].state_dict())
    start = tables[0].weight.detach().clone()
    opts = [torch.optim.SparseAdam(tables[0].parameters(), lr=0.1), LazyAdam(tables[1].parameters(), lr=0.1)]
    for _ in range(5):
        idx = torch.randint(0, 50, (30,))  # repeated rows: their gradients add up
        for table, opt in zip(tables, opts):
            table(idx).pow(2).sum().backward()
            opt.step()
            opt.zero_grad()
    torch.testing.assert_close(tables[1].weight, tables[0].weight)
    assert not torch.equal(tables[1].weight, start)


@pytest.mark.parametrize("shape", [(48, 32), (32, 48)])
def test_newton_schulz_in_bf16_is_torch_muons_and_fp32_agrees(shape):
    from torch.optim._muon import DEFAULT_A, DEFAULT_B, DEFAULT_C, EPS, _zeropower_via_newtonschulz

    from charlm.builtin.muon import newton_schulz

    update = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    coefficients = (DEFAULT_A, DEFAULT_B, DEFAULT_C)
    ours = newton_schulz(update, coefficients, 5, EPS, torch.bfloat16)
    assert torch.equal(ours, _zeropower_via_newtonschulz(update, coefficients, 5, EPS))
    fp32 = newton_schulz(update, coefficients, 5, EPS, torch.float32)
    assert fp32.dtype == torch.float32 and fp32.shape == shape
    assert torch.allclose(fp32, ours.float(), atol=3e-2)
    # roughly orthogonal rows or columns: singular values near 1 (the quintic keeps them in ~[0.7, 1.2])
    assert torch.linalg.svdvals(fp32).min() > 0.5 and torch.linalg.svdvals(fp32).max() < 1.3


def test_muon_iterates_in_bf16_only_where_the_cpu_multiplies_it_natively(monkeypatch):
    from charlm.builtin.muon import iteration_dtype

    for amx, avx512_bf16, expected in [(False, False, torch.float32), (True, False, torch.bfloat16), (False, True, torch.bfloat16)]:
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda amx=amx: amx)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda avx=avx512_bf16: avx)
        assert iteration_dtype(torch.device("cpu")) == expected
        assert build("muon")[1].muon.iteration_dtype == expected


def test_muon_steps_as_torch_muon_in_bf16_and_closely_in_fp32():
    torch.manual_seed(0)
    bf16 = build("muon")[1].muon
    torch.manual_seed(0)
    fp32 = build("muon")[1].muon
    bf16.iteration_dtype, fp32.iteration_dtype = torch.bfloat16, torch.float32
    start = [p.detach().clone() for p in bf16.param_groups[0]["params"]]
    reference = torch.optim.Muon([s.clone().requires_grad_() for s in start], lr=0.02, weight_decay=0.0)
    optimizers = (bf16, fp32, reference)
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        for i, shape in enumerate(s.shape for s in start):
            grad = torch.randn(shape, generator=generator)
            for opt in optimizers:
                opt.param_groups[0]["params"][i].grad = grad.clone()
        for opt in optimizers:
            opt.step()
    for p, q, r, s in zip(*(opt.param_groups[0]["params"] for opt in optimizers), start):
        assert torch.equal(p, r)  # bf16 iterations: torch's Muon bit for bit
        assert 0 < (q - p).abs().max() < 0.1 * (p - s).abs().max()  # fp32: the same steps, rounded less
