"""Synthetic sequences with learnable structure, for the quickstart and smoke tests.

Each item has a few "successor" items; a user walks this graph: with probability `p_follow`
the next item is one of the current item's successors (picked with Zipf-like weights), otherwise
a popularity-weighted random item. A sequence model can learn the transitions, so good models
score far above popularity; deterministic given `seed`.
"""

from __future__ import annotations

import numpy as np

from rucai.data.sequential import SeqRecDataModule, SequenceData


def generate_sequences(
    num_users: int = 1000,
    num_items: int = 200,
    min_len: int = 5,
    max_len: int = 30,
    num_successors: int = 3,
    p_follow: float = 0.8,
    seed: int = 0,
) -> SequenceData:
    rng = np.random.default_rng(seed)
    successors = rng.integers(1, num_items + 1, size=(num_items + 1, num_successors))
    succ_w = 1.0 / np.arange(1, num_successors + 1)
    succ_w /= succ_w.sum()
    pop = 1.0 / np.arange(1, num_items + 1) ** 0.8
    pop = rng.permutation(pop / pop.sum())
    sequences = []
    for _ in range(num_users):
        n = int(rng.integers(min_len, max_len + 1))
        s = [int(rng.choice(num_items, p=pop)) + 1]
        while len(s) < n:
            if rng.random() < p_follow:
                s.append(int(rng.choice(successors[s[-1]], p=succ_w)))
            else:
                s.append(int(rng.choice(num_items, p=pop)) + 1)
        sequences.append(s)
    text = {i: {"title": f"item {i}"} for i in range(1, num_items + 1)}
    return SequenceData(name="synthetic", sequences=sequences, num_items=num_items, item_text=text)


class SyntheticDataModule(SeqRecDataModule):
    def __init__(
        self,
        num_users: int = 1000,
        num_items: int = 200,
        min_len: int = 5,
        max_seq_len: int = 30,
        num_successors: int = 3,
        p_follow: float = 0.8,
        seed: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.gen_kwargs = dict(
            num_users=num_users,
            num_items=num_items,
            min_len=min_len,
            max_len=max_seq_len,
            num_successors=num_successors,
            p_follow=p_follow,
            seed=seed,
        )

    def load(self) -> SequenceData:
        return generate_sequences(**self.gen_kwargs)
