"""PackedDataset: batches are a pure function of (seed, epoch, k, rank, world_size)."""

import itertools

import numpy as np
import pytest
import torch

from charlm.data import PackedDataset, SplitWriter, open_split
from charlm.errors import CharLMError

SEQ, BATCH = 16, 4


@pytest.fixture(scope="module")
def split_path(tmp_path_factory):
    """~3 KB of random documents: windows are unique, so a window identifies its position."""
    path = tmp_path_factory.mktemp("split") / "train.bin"
    rng = np.random.default_rng(0)
    with SplitWriter(path) as w:
        for n in rng.integers(0, 200, size=30):
            w.add([rng.integers(0, 256, size=n, dtype=np.uint8).tobytes()])
        w.commit()
    return path


def rows(x):
    return {bytes(r.tolist()) for r in x.to(torch.uint8)}


def take(loader, n):
    return [tuple(t.clone() for t in b) for b in itertools.islice(loader, n)]


def assert_same_stream(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_batch_shapes_and_targets(split_path):
    ds = PackedDataset(split_path, SEQ, BATCH, seed=1)
    split = open_split(split_path)
    x, y = ds.batch(0, 0)
    assert x.shape == y.shape == (BATCH, SEQ) and x.dtype == y.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])
    tokens = bytes(split.tokens)
    for row_x, row_y in zip(x, y):
        start = tokens.find(bytes(row_x.tolist()))
        assert start >= 0 and tokens[start + 1 : start + SEQ + 1] == bytes(row_y.tolist())
    assert ds.batches_per_epoch == ((len(split) - 1) // SEQ - 1) // BATCH


def test_window_grid_shifts_between_epochs(split_path):
    ds = PackedDataset(split_path, SEQ, BATCH, seed=1)
    tokens = bytes(open_split(split_path).tokens)
    phases = {tokens.find(bytes(ds.batch(epoch, 0)[0][0].tolist())) % SEQ for epoch in range(8)}
    assert len(phases) > 1


def test_batches_are_a_pure_function(split_path):
    a = PackedDataset(split_path, SEQ, BATCH, seed=1)
    b = PackedDataset(open_split(split_path), SEQ, BATCH, seed=1)
    b.batch(3, 1)  # another epoch's plan must not leak into this one
    assert torch.equal(a.batch(2, 5)[0], b.batch(2, 5)[0])
    assert not torch.equal(a.batch(0, 0)[0], a.batch(1, 0)[0])
    assert not torch.equal(a.batch(0, 0)[0], PackedDataset(split_path, SEQ, BATCH, seed=2).batch(0, 0)[0])


def test_epoch_uses_each_window_once(split_path):
    ds = PackedDataset(split_path, SEQ, BATCH, seed=1)
    seen = [r for k in range(ds.batches_per_epoch) for r in rows(ds.batch(0, k)[0])]
    assert len(seen) == len(set(seen)) == ds.batches_per_epoch * BATCH


def test_rank_shards_are_disjoint_and_cover_the_global_batch(split_path):
    world = 3
    ranks = [PackedDataset(split_path, SEQ, BATCH, seed=1, rank=r, world_size=world) for r in range(world)]
    single = PackedDataset(split_path, SEQ, BATCH * world, seed=1)
    assert ranks[0].batches_per_epoch == single.batches_per_epoch
    for epoch, k in [(0, 0), (0, single.batches_per_epoch - 1), (4, 2)]:
        shards = [rows(ds.batch(epoch, k)[0]) for ds in ranks]
        assert sum(map(len, shards)) == len(set().union(*shards)) == BATCH * world
        assert set().union(*shards) == rows(single.batch(epoch, k)[0])


def test_loader_stream_is_the_same_for_0_and_2_workers(split_path):
    ds = PackedDataset(split_path, SEQ, BATCH, seed=1)
    n = ds.batches_per_epoch + 3  # crosses an epoch boundary
    expected = [ds.batch(*divmod(g, ds.batches_per_epoch)) for g in range(3, 3 + n)]
    assert_same_stream(take(ds.loader(num_workers=0, start=(0, 3)), n), expected)
    assert_same_stream(take(ds.loader(num_workers=2, start=(0, 3)), n), expected)


class SeedProbe(PackedDataset):
    """Yields the torch seed its loader worker runs with instead of data."""

    def batch(self, epoch, k):
        return torch.tensor(torch.initial_seed()), torch.tensor(epoch)


def test_workers_are_seeded_from_seed_epoch_rank_and_worker(split_path):
    def seeds(seed, rank):
        ds = SeedProbe(split_path, SEQ, BATCH, seed=seed, rank=rank, world_size=2)
        n = 2 * ds.batches_per_epoch  # two epochs, each worker taking every other batch
        return [(int(s), int(e)) for s, e in itertools.islice(ds.loader(num_workers=2), n)]

    first = seeds(1, 0)
    assert first == seeds(1, 0)
    per_worker_epoch = {(g % 2, e): s for g, (s, e) in enumerate(first)}
    assert len(set(per_worker_epoch.values())) == 4  # 2 workers x 2 epochs
    assert all(per_worker_epoch[(g % 2, e)] == s for g, (s, e) in enumerate(first))
    assert set(s for s, _ in seeds(1, 1)).isdisjoint(per_worker_epoch.values())
    assert set(s for s, _ in seeds(2, 0)).isdisjoint(per_worker_epoch.values())


def test_resume_mid_epoch_from_state_dict(split_path):
    ds = PackedDataset(split_path, SEQ, BATCH, seed=1)
    uninterrupted = take(ds.loader(), 2 * ds.batches_per_epoch)
    first = ds.loader()
    before = take(first, ds.batches_per_epoch + 2)
    state = first.state_dict()
    assert (state["epoch"], state["batch"]) == first.position == (1, 2)
    assert all(isinstance(v, int) for v in state.values())
    resumed = PackedDataset(split_path, SEQ, BATCH, seed=1).loader(start=state)
    assert_same_stream(before + take(resumed, ds.batches_per_epoch - 2), uninterrupted)


def test_rank_0_position_resumes_every_rank(split_path):
    state = PackedDataset(split_path, SEQ, BATCH, seed=1, rank=0, world_size=2).loader(start=(1, 1)).state_dict()
    rank1 = PackedDataset(split_path, SEQ, BATCH, seed=1, rank=1, world_size=2)
    assert torch.equal(next(rank1.loader(start=state))[0], rank1.batch(1, 1)[0])


def test_resume_refuses_another_stream(split_path):
    state = PackedDataset(split_path, SEQ, BATCH, seed=1).loader().state_dict()
    with pytest.raises(CharLMError, match="batch_size 4 -> 8"):
        PackedDataset(split_path, SEQ, 2 * BATCH, seed=1).loader(start=state)


def test_split_too_short(tmp_path):
    with SplitWriter(tmp_path / "tiny.bin") as w:
        w.add([b"short"])
        w.commit()
    with pytest.raises(CharLMError, match=r"tiny\.bin: 6 bytes, fewer than seq_len \+ 1 = 17"):
        PackedDataset(tmp_path / "tiny.bin", SEQ, BATCH, seed=0)
    with pytest.raises(CharLMError, match="fewer than one batch"):
        PackedDataset(tmp_path / "tiny.bin", 2, 8, seed=0)
