"""RecBole atomic files (`<name>.inter`, `<name>.item`): tab-separated with `field:type` headers.

Interactions are grouped by user and sorted by timestamp (stable, so ties keep file order, as
RecBole does); item tokens are mapped to ids 1..N in order of first appearance; `.item` text
fields (`token_seq`/`token`) become item text. Optional rating threshold and k-core filtering.
Get the files with `python -m rucai.data.download recbole --name <name> --out <dir>`.
"""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from pathlib import Path

from rucai.data.sequential import SeqRecDataModule, SequenceData
from rucai.errors import UserError


def _read_atomic(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = [h.split(":")[0] for h in next(reader)]
        return header, [row for row in reader if row]


def _kcore(pairs: list[tuple[str, str, float]], k: int) -> list[tuple[str, str, float]]:
    while True:
        users = Counter(u for u, _, _ in pairs)
        items = Counter(i for _, i, _ in pairs)
        kept = [p for p in pairs if users[p[0]] >= k and items[p[1]] >= k]
        if len(kept) == len(pairs):
            return kept
        pairs = kept


def load_atomic(dir: str | Path, name: str, min_rating: float | None = None, k_core: int = 0) -> SequenceData:
    d = Path(dir).expanduser()
    inter = d / f"{name}.inter"
    if not inter.is_file():
        raise UserError(f"{inter} not found; set data.dir=<folder with {name}.inter> or download it: "
                        f"python -m rucai.data.download recbole --name {name} --out {d.parent}")
    header, rows = _read_atomic(inter)
    try:
        ui, ii = header.index("user_id"), header.index("item_id")
    except ValueError as e:
        raise UserError(f"{inter}: needs user_id and item_id columns, has {header}") from e
    ti = header.index("timestamp") if "timestamp" in header else None
    ri = header.index("rating") if "rating" in header else None
    pairs = []
    for r in rows:
        if min_rating is not None and ri is not None and float(r[ri]) < min_rating:
            continue
        pairs.append((r[ui], r[ii], float(r[ti]) if ti is not None else 0.0))
    if k_core:
        pairs = _kcore(pairs, k_core)
    by_user: dict[str, list[tuple[float, str]]] = defaultdict(list)
    item_ids: dict[str, int] = {}
    for u, i, t in pairs:
        by_user[u].append((t, i))
        item_ids.setdefault(i, len(item_ids) + 1)
    users = sorted(by_user, key=lambda u: (len(u), u))
    sequences = [[item_ids[i] for _, i in sorted(by_user[u], key=lambda x: x[0])] for u in users]
    item_text: dict[int, dict] = {}
    item_file = d / f"{name}.item"
    if item_file.is_file():
        h, item_rows = _read_atomic(item_file)
        for r in item_rows:
            rec = dict(zip(h, r, strict=False))
            iid = item_ids.get(rec.pop("item_id", None))
            if iid is not None:
                item_text[iid] = rec
    return SequenceData(name=name, sequences=sequences, num_items=len(item_ids), item_text=item_text, user_ids=users)


class RecBoleDataModule(SeqRecDataModule):
    def __init__(self, dir: str, name: str, min_rating: float | None = None, k_core: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.dir, self.name, self.min_rating, self.k_core = dir, name, min_rating, k_core

    def load(self) -> SequenceData:
        return load_atomic(self.dir, self.name, self.min_rating, self.k_core)
