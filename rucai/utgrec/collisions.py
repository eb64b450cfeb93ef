"""Unique code tuples for all items: the authors' `generate_tokens_topk.py`.

Items whose code tuple is unique keep it. Each group of items sharing a tuple goes through rounds
k = 2, 3, ..., leaf_codes - 1 over the leaf entries ranked by distance to the item's last
difference (h3 - h2):

- a group whose tuple is still free and whose members all sit at the same (k-1)-th nearest entry
  (every group in round 2) keeps the member closest to that entry (ties: the first item) and
  moves the others to their k-th nearest entry; a group whose tuple is already taken, or whose
  members' (k-1)-th entries differ, moves every member to its k-th nearest entry;
- a kept item or a moved item whose new tuple is free and unshared takes it; the rest regroup by
  their new tuple for the next round;
- in the last round every item still colliding draws a random tail (1,000 tries), then a random
  second code with its original tail (1,000 tries).

Additions: `seed` makes the random tail reproducible; when the random draws fail (or there are
fewer than 3 leaf entries, where the authors' loop never runs) the first free (second, tail) pair
under the item's first code is taken; when every tuple under that first code is taken (a barely
trained tokenizer crowds thousands of items under one root entry), the first free tuple under the
next first codes (cyclically, `first_codes` of them) is taken. The result is always unique, or a
ValueError says up front that the codebooks hold fewer tuples than there are items.
"""

from __future__ import annotations

import random
from itertools import product

import numpy as np


def collision_rate(codes) -> float:
    """Share of items whose tuple another item already has (the authors' `Conflict rate`)."""
    codes = np.asarray(codes)
    if len(codes) == 0:
        return 0.0
    return 1.0 - len({tuple(r) for r in codes.tolist()}) / len(codes)


def resolve_collisions(codes, distances, seed: int = 0, tries: int = 1000,
                       first_codes: int | None = None) -> np.ndarray:
    """Unique tuples [N, L] from codes [N, L] (level-local; levels 2..L index the leaf book) and
    the last level's distances [N, leaf_codes] (smaller = nearer; pass -scores for scores).
    `first_codes` = size of the level-1 codebook (default: the largest first code + 1)."""
    codes = np.asarray(codes, dtype=np.int64)
    dist = np.asarray(distances, dtype=np.float64)
    if codes.ndim != 2 or codes.shape[1] < 2:
        raise ValueError(f"codes must be [N, L>=2], got {codes.shape}")
    if dist.shape[0] != codes.shape[0] or dist.ndim != 2:
        raise ValueError(f"distances must be [N={codes.shape[0]}, leaf_codes], got {dist.shape}")
    n, levels = codes.shape
    leaf = dist.shape[1]
    roots = int(first_codes) if first_codes is not None else int(codes[:, 0].max()) + 1 if n else 1
    if n > roots * leaf ** (levels - 1):
        raise ValueError(f"{n} items but the codebooks hold only {roots} x {leaf}^{levels - 1} = "
                         f"{roots * leaf ** (levels - 1)} code tuples: enlarge the leaf codebook")
    rng = random.Random(seed)
    order = np.argsort(dist, axis=1, kind="stable")
    out = codes.copy()
    used: set[tuple] = set()

    def take(iid: int, t: tuple) -> None:
        out[iid] = t
        used.add(t)

    groups: dict[tuple, list[int]] = {}
    for i, row in enumerate(codes.tolist()):
        groups.setdefault(tuple(row), []).append(i)
    pending: list[tuple[bool, list[int]]] = []
    for t, ids in groups.items():
        if len(ids) == 1:
            take(ids[0], t)
        else:
            pending.append((False, ids))

    for k in range(2, leaf):
        if not pending:
            break
        regrouped: dict[tuple, list[int]] = {}
        for taken, ids in pending:
            idx = np.asarray(ids)
            prev, nxt = order[idx, k - 2], order[idx, k - 1]
            fix = np.zeros(len(ids), dtype=bool)
            if not taken and (prev == prev[0]).all():
                score = -dist[idx, prev]
                fix[int(np.flatnonzero(score == score.max())[0])] = True
            tails = np.where(fix, prev, nxt)
            for iid, tail, f in zip(ids, tails.tolist(), fix.tolist(), strict=True):
                t = tuple(codes[iid, :-1].tolist()) + (tail,)
                if f and t not in used:
                    take(iid, t)
                else:
                    regrouped.setdefault(t, []).append(iid)
        last = k == leaf - 1
        pending = []
        for t, ids in regrouped.items():
            if len(ids) == 1 and t not in used:
                take(ids[0], t)
            elif last:
                for iid in ids:
                    _random_tail(iid, codes, leaf, roots, rng, tries, used, take)
            else:
                pending.append((t in used, ids))
    for _, ids in pending:  # leaf < 3: the rounds never ran
        for iid in ids:
            _random_tail(iid, codes, leaf, roots, rng, tries, used, take)
    return out


def _random_tail(iid, codes, leaf, roots, rng, tries, used, take) -> None:
    row = codes[iid].tolist()
    for _ in range(tries):
        t = tuple(row[:-1] + [rng.randint(0, leaf - 1)])
        if t not in used:
            return take(iid, t)
    if len(row) >= 3:
        for _ in range(tries):
            t = tuple(row[:-2] + [rng.randint(0, leaf - 1), row[-1]])
            if t not in used:
                return take(iid, t)
        for second, tail in product(range(leaf), range(leaf)):
            t = tuple(row[:-2] + [second, tail])
            if t not in used:
                return take(iid, t)
    else:
        for tail in range(leaf):
            t = tuple(row[:-1] + [tail])
            if t not in used:
                return take(iid, t)
    for step in range(1, roots):  # the first code's subtree is full: the next first codes
        first = (row[0] + step) % roots
        for rest in product(range(leaf), repeat=len(row) - 1):
            t = (first, *rest)
            if t not in used:
                return take(iid, t)
    raise ValueError(f"no free code tuple left for item {iid}: enlarge the leaf codebook")
