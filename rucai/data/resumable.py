"""A training DataLoader that resumes mid-epoch on exactly the batches the uninterrupted run would draw.

Lightning saves the state of every training loader that has `state_dict` / `load_state_dict` in each
checkpoint and hands it back when a fit resumes from a checkpoint taken mid-epoch (a SLURM pre-timeout
signal, `rucai.callbacks.SignalCheckpoint`). A plain DataLoader has no state, so the resumed epoch
draws a fresh order and some examples are seen twice and others never.

`ResumableLoader` keeps, for the epoch in flight, the number of batches it has handed out and the torch
RNG states from which the epoch's order was drawn: at the iterator's creation (the workers' base seed;
with workers, the shuffle too) and, in a single process, at the first batch (where torch's
RandomSampler draws its permutation). On resume it draws the order again from those states, drops the
batches already trained on (they are loaded and discarded) and puts the global RNG back where the
checkpoint left it, so what follows (dropout masks, the next epoch's shuffle) is also as if the run
had never stopped. Epoch-seeded samplers (LengthGroupedSampler, DistributedSampler) ignore the RNG
states; an uninterrupted run draws exactly as a plain DataLoader does.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils.data import DataLoader

_END = object()


@contextmanager
def _rng_state(state: torch.Tensor | None):
    """Run the block with the global torch RNG at `state` (None: as it is), then restore it."""
    if state is None:
        yield
        return
    before = torch.get_rng_state()
    torch.set_rng_state(state)
    try:
        yield
    finally:
        torch.set_rng_state(before)


class ResumableLoader(DataLoader):
    """A DataLoader with Lightning's stateful-loader protocol (module docstring); same arguments."""

    _pending: dict[str, Any] | None = None
    _yielded: int = 0
    _rng_iter: torch.Tensor | None = None
    _rng_first: torch.Tensor | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"batches": self._yielded, "rng_iter": self._rng_iter, "rng_first": self._rng_first}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pending = dict(state)

    def __iter__(self) -> Iterator[Any]:
        pending, self._pending = self._pending or {}, None
        self._yielded = 0
        with _rng_state(pending.get("rng_iter")):
            self._rng_iter = torch.get_rng_state()
            it = super().__iter__()
        return self._batches(it, pending)

    def _batches(self, it: Iterator[Any], pending: dict[str, Any]) -> Iterator[Any]:
        with _rng_state(pending.get("rng_first")):
            self._rng_first = torch.get_rng_state()
            batch = next(it, _END)
        skip = int(pending.get("batches", 0))
        n = 0
        while batch is not _END:
            if n >= skip:
                self._yielded = n + 1
                yield batch
            n += 1
            batch = next(it, _END)
