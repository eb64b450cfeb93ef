"""Sequential recommendation data: one dataset object for every format, LOO split, DataModule.

Item ids are 1..num_items; 0 is padding. The leave-one-out protocol (RecBole, TIGER, MTGRec):
for each user's chronological sequence s, train on every prefix of s[:-2] (target s[t] from
s[:t], t >= 1), validate on s[-2] given s[:-2], test on s[-1] given s[:-1]; histories are
truncated to the last `max_len` items.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from rucai.data.resumable import ResumableLoader
from rucai.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class SequenceData:
    """Users' chronological item sequences (ids 1..num_items) plus optional item text."""

    name: str
    sequences: list[list[int]]
    num_items: int
    item_text: dict[int, dict[str, Any]] = field(default_factory=dict)
    user_ids: list[str] | None = None

    def __post_init__(self) -> None:
        for s in self.sequences:
            for i in s:
                if not 1 <= i <= self.num_items:
                    raise ValueError(f"{self.name}: item id {i} outside 1..{self.num_items}")

    def stats(self) -> dict[str, Any]:
        n_inter = sum(len(s) for s in self.sequences)
        n_users = len(self.sequences)
        lengths = sorted(len(s) for s in self.sequences)
        return {
            "dataset": self.name,
            "users": n_users,
            "items": self.num_items,
            "interactions": n_inter,
            "avg_len": round(n_inter / max(n_users, 1), 2),
            "median_len": lengths[len(lengths) // 2] if lengths else 0,
            "density": round(n_inter / max(n_users * self.num_items, 1), 6),
        }


def train_windows(sequences: list[list[int]], max_len: int) -> list[tuple[list[int], list[int]]]:
    """The training prefixes of `loo_split` packed into windows for all-positions training.

    A causal model reading a right-padded window x predicts x's next item at every position p from
    x[:p+1], which is exactly the prefix history of that target when the window starts at the
    user's first item. So each user's first min(m-1, max_len) training targets share one window
    (m = len(s) - 2 training items); a target further than max_len in gets its own window of its
    last max_len items, scored at the last position only (target 0 elsewhere = ignored). The set of
    (history, target) pairs is identical to `loo_split`'s training pairs; far fewer sequences are
    encoded (Office: 9,366 windows instead of 38,543 prefixes; experiments/sasrec/results/office_data_stats).
    """
    out = []
    for s in sequences:
        if len(s) < 3:
            continue
        u = s[: len(s) - 2]
        n = min(len(u) - 1, max_len)
        if n >= 1:
            out.append((u[:n], u[1 : n + 1]))
        for t in range(max_len + 1, len(u)):
            out.append((u[t - max_len : t], [0] * (max_len - 1) + [u[t]]))
    return out


def collate_windows(batch: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
    """Right-pad windows to the longest in the batch: `seq` [B, T] and per-position `targets`."""
    b, t = len(batch), max(len(x) for x, _ in batch)
    seq = torch.zeros(b, t, dtype=torch.long)
    targets = torch.zeros(b, t, dtype=torch.long)
    lengths = torch.empty(b, dtype=torch.long)
    for i, (x, y) in enumerate(batch):
        seq[i, : len(x)] = torch.as_tensor(x, dtype=torch.long)
        targets[i, : len(y)] = torch.as_tensor(y, dtype=torch.long)
        lengths[i] = len(x)
    return {"seq": seq, "lengths": lengths, "targets": targets}


def loo_split(
    sequences: list[list[int]], max_len: int
) -> tuple[list[tuple[list[int], int]], list[tuple[list[int], int]], list[tuple[list[int], int]]]:
    """Leave-one-out split into (history, target) pairs. Users with < 3 items are dropped."""
    train, valid, test = [], [], []
    for s in sequences:
        if len(s) < 3:
            continue
        for t in range(1, len(s) - 2):
            train.append((s[max(0, t - max_len) : t], s[t]))
        valid.append((s[: len(s) - 2][-max_len:], s[-2]))
        test.append((s[: len(s) - 1][-max_len:], s[-1]))
    return train, valid, test


def loo_users(sequences: list[list[int]]) -> tuple[list[int], list[int], list[int]]:
    """The user index (position in `sequences`) of each pair `loo_split` returns, as parallel lists."""
    train, valid, test = [], [], []
    for u, s in enumerate(sequences):
        if len(s) < 3:
            continue
        train += [u] * (len(s) - 3)
        valid.append(u)
        test.append(u)
    return train, valid, test


class UserPair(tuple):
    """A (history, target) pair that also carries its user's index as `.user`; it unpacks as a pair."""

    def __new__(cls, hist: list[int], target: int, user: int):
        obj = super().__new__(cls, (hist, target))
        obj.user = user
        return obj

    def __reduce__(self):
        return UserPair, (self[0], self[1], self.user)


def train_items(sequences: list[list[int]]) -> list[int]:
    """Items of the training split under leave-one-out: every item of s[:-2] of each user's sequence
    (MTGRec `tokenizer/main.py`: `items[:-2]` of all_item_seqs), sorted."""
    out: set[int] = set()
    for s in sequences:
        out.update(int(i) for i in list(s)[:-2])
    return sorted(out)



class HistoryTargetDataset(Dataset):
    def __init__(self, pairs: list[tuple[list[int], int]], max_len: int, users: list[int] | None = None):
        self.pairs = pairs
        self.max_len = max_len
        # optional user index per pair (parallel list): items then carry it (`UserPair.user`) and
        # `collate_right_padded` batches gain a "user" key (models with a user token read it)
        if users is not None and len(users) != len(pairs):
            raise ValueError(f"{len(users)} users for {len(pairs)} pairs")
        self.users = users

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, idx: int) -> tuple[list[int], int]:
        if self.users is None:
            return self.pairs[idx]
        return UserPair(*self.pairs[idx], self.users[idx])


def collate_right_padded(batch: list[tuple[list[int], int]], max_len: int) -> dict[str, torch.Tensor]:
    """Right-pad histories with 0 (the last real item sits at index length-1)."""
    b = len(batch)
    seq = torch.zeros(b, max_len, dtype=torch.long)
    lengths = torch.empty(b, dtype=torch.long)
    target = torch.empty(b, dtype=torch.long)
    for i, (hist, tgt) in enumerate(batch):
        hist = hist[-max_len:]
        seq[i, : len(hist)] = torch.as_tensor(hist, dtype=torch.long)
        lengths[i] = len(hist)
        target[i] = tgt
    out = {"seq": seq, "lengths": lengths, "target": target}
    if b and all(isinstance(ex, UserPair) for ex in batch):  # user indices when the items carry them
        out["user"] = torch.tensor([ex.user for ex in batch], dtype=torch.long)
    return out


class LengthGroupedSampler(Sampler[int]):
    """Every example exactly once per epoch, in a seeded order where each batch holds similar lengths.

    Epoch e: a random permutation (generator seeded with `seed + e`), cut into groups of
    `group_batches` batches; each group sorted by length (longest first) and cut into batches; the
    batches shuffled (the one partial batch stays last so a DataLoader with the same `batch_size`
    cuts exactly these batches). Models that trim a batch to its longest member (TIGER, SASRec
    windows) then pad little. Lightning calls `set_epoch` at every epoch start, so a resumed run
    draws the same batches as one that never stopped; without it, each `__iter__` counts an epoch.
    """

    def __init__(self, lengths: list[int] | torch.Tensor, batch_size: int, seed: int = 0, group_batches: int = 50):
        if batch_size < 1 or group_batches < 1:
            raise UserError(f"LengthGroupedSampler needs batch_size >= 1 and group_batches >= 1, "
                            f"got {batch_size}, {group_batches}")
        self.lengths = torch.as_tensor(lengths, dtype=torch.long)
        self.batch_size, self.seed, self.group_batches = batch_size, seed, group_batches
        self.epoch: int | None = None
        self._iters = 0

    def __len__(self) -> int:
        return len(self.lengths)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self, epoch: int) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed + epoch)
        perm = torch.randperm(len(self.lengths), generator=g)
        chunk = self.batch_size * self.group_batches
        out: list[torch.Tensor] = []
        for s in range(0, len(perm), chunk):
            idx = perm[s:s + chunk]
            idx = idx[torch.argsort(self.lengths[idx], descending=True, stable=True)]
            out += list(idx.split(self.batch_size))
        full = [b for b in out if len(b) == self.batch_size]
        partial = [b for b in out if len(b) < self.batch_size]
        order = torch.randperm(len(full), generator=g).tolist()
        return [full[i] for i in order] + partial

    def __iter__(self):
        epoch = self.epoch if self.epoch is not None else self._iters
        self._iters += 1
        for b in self.batches(epoch):
            yield from b.tolist()


def _history_lengths(pairs: list[tuple[list[int], Any]], max_len: int) -> list[int]:
    return [min(len(h), max_len) for h, _ in pairs]


class SeqRecDataModule(L.LightningDataModule):
    """Base DataModule: subclasses implement `load()` for one source format."""

    def __init__(
        self,
        max_len: int = 20,
        batch_size: int = 256,
        eval_batch_size: int = 512,
        num_workers: int = 0,
        max_users: int | None = None,
        train_mode: str = "prefix",
        train_batch_targets: int | None = None,
        length_grouping: bool = False,
        val_users: int | None = None,
    ):
        super().__init__()
        # "prefix": one (history, target) sample per training prefix (RecBole's augmentation; what
        # encoder-decoder models such as TIGER need). "all_positions": the same pairs packed into
        # windows scored at every position (causal models such as SASRec; far cheaper epochs).
        if train_mode not in ("prefix", "all_positions"):
            raise UserError(f"data.train_mode={train_mode!r} is not one of: prefix, all_positions")
        self.train_mode = train_mode
        # all_positions only: windows per batch chosen so a batch holds ~this many targets on average
        # (keeps batch_size comparable with prefix training, e.g. RecBole's 2048)
        self.train_batch_targets = train_batch_targets
        self.max_len = max_len
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.max_users = max_users
        # batches of similar history lengths (LengthGroupedSampler); validation/test batches sorted
        # by length (metrics are means over users, so their order does not matter)
        self.length_grouping = length_grouping
        # validate on this many seeded validation users during training (null: all); the train task
        # re-validates the best checkpoint on all of them (`full_val_dataloader`)
        if val_users is not None and int(val_users) < 1:
            raise UserError(f"data.val_users={val_users}; give a positive number of users or null for all")
        self.val_users = None if val_users is None else int(val_users)
        self.data: SequenceData | None = None
        self._splits: dict[str, HistoryTargetDataset] = {}

    def load(self) -> SequenceData:  # pragma: no cover - abstract
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.data is not None:
            return
        data = self.load()
        if self.max_users is not None:
            data.sequences = data.sequences[: self.max_users]
        self.data = data
        train, valid, test = loo_split(data.sequences, self.max_len)
        users = loo_users(data.sequences)
        self._splits = {
            "train": HistoryTargetDataset(
                train_windows(data.sequences, self.max_len) if self.train_mode == "all_positions" else train,
                self.max_len,
                users=None if self.train_mode == "all_positions" else users[0],
            ),
            "valid": HistoryTargetDataset(valid, self.max_len, users=users[1]),
            "test": HistoryTargetDataset(test, self.max_len, users=users[2]),
        }
        stats = data.stats() | {k: len(v) for k, v in self._splits.items()} | {"train_targets": len(train)}
        log.info("dataset stats: %s", stats)
        self.stats = stats

    def split(self, name: str) -> HistoryTargetDataset:
        """The `train`, `valid` or `test` dataset (after `setup`)."""
        self.setup()
        return self._splits[name]

    @property
    def num_items(self) -> int:
        self.setup()
        assert self.data is not None
        return self.data.num_items

    def model_kwargs(self) -> dict[str, Any]:
        """What the model needs to know about the data (passed at instantiation)."""
        return {"num_items": self.num_items, "max_len": self.max_len}

    def train_batch_size(self) -> int:
        if self.train_mode != "all_positions" or not self.train_batch_targets:
            return self.batch_size
        windows = self._splits["train"]
        per_window = self.stats["train_targets"] / max(len(windows), 1)
        return max(1, round(self.train_batch_targets / per_window))

    def _loader(self, split: str, shuffle: bool, batch_size: int, users: int | None = None) -> DataLoader:
        windows = split == "train" and self.train_mode == "all_positions"
        ds: Dataset = self._splits[split]
        if users is not None and users < len(ds):  # a seeded subset of the users, in a fixed order
            g = torch.Generator().manual_seed(0)
            ds = torch.utils.data.Subset(ds, sorted(torch.randperm(len(ds), generator=g)[:users].tolist()))
        sampler = None
        if self.length_grouping:
            pairs = [ds[i] for i in range(len(ds))]
            lengths = [len(x) for x, _ in pairs] if windows else _history_lengths(pairs, self.max_len)
            if shuffle:
                sampler = LengthGroupedSampler(lengths, batch_size, seed=torch.initial_seed() % 2**31)
            else:
                sampler = sorted(range(len(ds)), key=lambda i: -lengths[i])
            shuffle = False
        # training: the epoch's position is saved in checkpoints (mid-epoch resume, rucai.data.resumable)
        return (ResumableLoader if split == "train" else DataLoader)(
            ds,
            batch_size=batch_size,
            shuffle=shuffle,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=collate_windows if windows else partial(collate_right_padded, max_len=self.max_len),
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True, self.train_batch_size())

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", False, self.eval_batch_size, users=self.val_users)

    def full_val_dataloader(self) -> DataLoader:
        """All validation users, whatever `val_users` says (the best checkpoint's final validation)."""
        return self._loader("valid", False, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False, self.eval_batch_size)
