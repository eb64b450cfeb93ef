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
from torch.utils.data import DataLoader, Dataset

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
    encoded (Office: 5.4k windows instead of 38.5k prefixes).
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


class HistoryTargetDataset(Dataset):
    def __init__(self, pairs: list[tuple[list[int], int]], max_len: int):
        self.pairs = pairs
        self.max_len = max_len

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, idx: int) -> tuple[list[int], int]:
        return self.pairs[idx]


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
    return {"seq": seq, "lengths": lengths, "target": target}


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
        self._splits = {
            "train": HistoryTargetDataset(
                train_windows(data.sequences, self.max_len) if self.train_mode == "all_positions" else train,
                self.max_len,
            ),
            "valid": HistoryTargetDataset(valid, self.max_len),
            "test": HistoryTargetDataset(test, self.max_len),
        }
        stats = data.stats() | {k: len(v) for k, v in self._splits.items()} | {"train_targets": len(train)}
        log.info("dataset stats: %s", stats)
        self.stats = stats

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

    def _loader(self, split: str, shuffle: bool, batch_size: int) -> DataLoader:
        windows = split == "train" and self.train_mode == "all_positions"
        return DataLoader(
            self._splits[split],
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=collate_windows if windows else partial(collate_right_padded, max_len=self.max_len),
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True, self.train_batch_size())

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", False, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False, self.eval_batch_size)
