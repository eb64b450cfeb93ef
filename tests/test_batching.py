"""Length-grouped batches, the validation-user subset and the CPU thread policy (issue 14 item 1)."""

from __future__ import annotations

import pytest
import torch

from rucai.data.sequential import LengthGroupedSampler
from rucai.data.synthetic import SyntheticDataModule
from rucai.errors import UserError
from rucai.runtime import hardware


def _dm(**kw):
    dm = SyntheticDataModule(num_users=120, num_items=30, batch_size=16, eval_batch_size=32, max_len=8, **kw)
    dm.setup("fit")
    return dm


def _epoch_batches(loader, epoch):
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    return [(b["seq"].clone(), b["lengths"].clone(), b["target"].clone()) for b in loader]


def _pairs(batches):
    out = []
    for seq, lengths, target in batches:
        for s, n, t in zip(seq, lengths, target, strict=True):
            out.append((tuple(s[:n].tolist()), int(t)))
    return sorted(out)


def test_grouping_yields_exactly_the_same_examples_per_epoch():
    plain, grouped = _dm(), _dm(length_grouping=True)
    torch.manual_seed(0)
    for epoch in range(3):
        a, b = _epoch_batches(plain.train_dataloader(), epoch), _epoch_batches(grouped.train_dataloader(), epoch)
        assert _pairs(a) == _pairs(b)  # the same multiset of (history, target) examples
        assert len(a) == len(b)
        assert sum(len(x[2]) for x in b) == len(grouped.split("train"))


def test_grouped_batches_are_narrower_and_seeded_per_epoch():
    lengths = [1 + (i * 7) % 20 for i in range(1000)]
    s = LengthGroupedSampler(lengths, batch_size=50, seed=3, group_batches=5)
    b0, b0_again, b1 = s.batches(0), s.batches(0), s.batches(1)
    assert all(torch.equal(x, y) for x, y in zip(b0, b0_again, strict=True))
    assert any(not torch.equal(x, y) for x, y in zip(b0, b1, strict=True))
    assert sorted(torch.cat(b0).tolist()) == list(range(1000))
    lt = torch.tensor(lengths)
    grouped_width = sum(int(lt[b].max()) for b in b0)
    perm = torch.randperm(1000, generator=torch.Generator().manual_seed(3))
    random_width = sum(int(lt[perm[i:i + 50]].max()) for i in range(0, 1000, 50))
    assert grouped_width < 0.8 * random_width  # padding is what grouping removes
    # set_epoch decides the order, so a resumed run sees the same batches
    s.set_epoch(1)
    assert list(s) == torch.cat(b1).tolist()


def test_partial_batch_stays_last():
    s = LengthGroupedSampler(list(range(1, 104)), batch_size=10, seed=0, group_batches=2)
    sizes = [len(b) for b in s.batches(0)]
    assert sizes[:-1] == [10] * 10 and sizes[-1] == 3


def test_sampler_rejects_bad_sizes():
    with pytest.raises(UserError, match="batch_size"):
        LengthGroupedSampler([1, 2], batch_size=0)


def test_val_users_subset_and_full_loader():
    dm = _dm(val_users=10)
    sub = [t for b in dm.val_dataloader() for t in b["target"].tolist()]
    full = [t for b in dm.full_val_dataloader() for t in b["target"].tolist()]
    assert len(sub) == 10 and len(full) == len(dm.split("valid"))
    assert sub == [t for b in _dm(val_users=10).val_dataloader() for t in b["target"].tolist()]  # seeded
    with pytest.raises(UserError, match="val_users"):
        SyntheticDataModule(val_users=0)


def test_sorted_evaluation_keeps_every_user():
    dm = _dm(length_grouping=True)
    got = sorted(t for b in dm.val_dataloader() for t in b["target"].tolist())
    assert got == sorted(t for _, t in dm.split("valid").pairs)
    widths = [int(b["lengths"].max()) for b in dm.val_dataloader()]
    assert widths == sorted(widths, reverse=True)


def test_thread_policy():
    assert hardware.thread_count(None) is None
    assert hardware.thread_count(3) == 3
    assert hardware.thread_count("auto", cores=2, load=1.2, env={}) == 1  # one core busy elsewhere
    assert hardware.thread_count("auto", cores=16, load=0.0, env={"RUCAI_PARALLEL_JOBS": "4"}) == 4
    assert hardware.thread_count("auto", cores=2, load=9.0, env={}) == 1  # never below one
    assert hardware.thread_count("auto", cores=8, load=0.0, env={"OMP_NUM_THREADS": "2"}) == 2
    with pytest.raises(UserError, match="hardware.threads"):
        hardware.thread_count("many")


def test_bf16_capability_from_cpu_flags():
    assert hardware.cpu_has_bf16("flags : fpu avx512f avx512_bf16 amx_tile")
    assert not hardware.cpu_has_bf16("flags : fpu avx2 avx512f")
