"""Amazon Reviews 2023 benchmark files (the MTGRec / UTGRec / CCFRec papers' format).

    <dir>/<Category>.train.csv.gz   user_id,parent_asin,rating,timestamp,history
    <dir>/<Category>.valid.csv.gz   one row per user: 2nd-to-last item, history = training items
    <dir>/<Category>.test.csv.gz    one row per user: last item, history = all earlier items
    <dir>/meta_<Category>.jsonl.gz  item metadata (title, features, description, categories, store, details, ...)

from `.../amazon_2023/benchmark/5core/last_out_w_his/` and `.../amazon_2023/raw/meta_categories/`
(get them with `python -m rucai.data.download amazon23 --category Musical_Instruments --out <dir>`).
Each user's chronological sequence is the test row's `history` followed by its `parent_asin`, so the
leave-one-out split of `rucai.data.sequential` reproduces the files' own valid/test targets; that is
checked while loading. Item ids are 1..N in order of first appearance (0 = padding).
"""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path
from typing import Any

from rucai.data.download import AMAZON23_CATEGORIES
from rucai.data.sequential import SeqRecDataModule, SequenceData
from rucai.errors import UserError

log = logging.getLogger(__name__)

CATEGORIES = AMAZON23_CATEGORIES  # short name -> category
# Metadata fields kept as item text (the 2023 meta has lists for features/description/categories;
# `details` is a dict of product facts, whose "Brand" becomes the item's `brand`).
META_FIELDS = ("title", "features", "description", "categories", "store", "main_category", "details")


def split_files(dir: Path, category: str) -> dict[str, Path]:
    return {s: dir / f"{category}.{s}.csv.gz" for s in ("train", "valid", "test")}


def _read_split(path: Path) -> list[dict[str, str]]:
    import csv

    with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _check_files(d: Path, category: str) -> dict[str, Path]:
    hint = f"python -m rucai.data.download amazon23 --category {category} --out {d}"
    if not d.is_dir():
        raise UserError(f"data.dir={d} does not exist; set data.dir=<folder> or download it: {hint}")
    files = split_files(d, category)
    missing = [p.name for p in files.values() if not p.is_file()]
    if missing:
        found = sorted({p.name.split(".")[0] for p in d.glob("*.test.csv.gz")})
        alt = f" (found categories: {', '.join(found)}: data.category=...)" if found else ""
        raise UserError(f"{d / missing[0]} not found{alt}; download it: {hint}")
    return files


def load_meta(path: Path, asins: set[str], fields: tuple[str, ...] = META_FIELDS) -> dict[str, dict[str, Any]]:
    """parent_asin -> {field: value} for the items in `asins` (streams the gzip'd JSONL).

    `brand` (the 2018 files' field name) is `details["Brand"]` when the item has one (CCFRec's brand
    view); only when it has none does it fall back to `store` (the seller's name)."""
    out: dict[str, dict[str, Any]] = {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            a = rec.get("parent_asin")
            if a in asins:
                out[a] = {k: rec.get(k) for k in fields if rec.get(k) not in (None, "", [])}
                details = out[a].get("details")
                brand = details.get("Brand") if isinstance(details, dict) else None
                if brand not in (None, "", []):
                    out[a]["brand"] = brand
                elif "store" in out[a]:
                    out[a]["brand"] = out[a]["store"]  # fallback: no details["Brand"]
    return out


def load_amazon2023(dir: str | Path, category: str) -> SequenceData:
    d = Path(dir).expanduser()
    category = CATEGORIES.get(category, category)
    files = _check_files(d, category)
    test = _read_split(files["test"])
    valid = {r["user_id"]: r for r in _read_split(files["valid"])}
    item_ids: dict[str, int] = {}
    sequences: list[list[int]] = []
    users: list[str] = []
    mismatched = 0
    for row in test:
        asins = row["history"].split() + [row["parent_asin"]]
        v = valid.get(row["user_id"])
        if v is None or v["history"].split() + [v["parent_asin"]] != asins[:-1]:
            mismatched += 1
        users.append(row["user_id"])
        sequences.append([item_ids.setdefault(a, len(item_ids) + 1) for a in asins])
    if mismatched:
        log.warning("%s: %d of %d users' valid rows disagree with their test history", category, mismatched, len(test))
    meta_path = d / f"meta_{category}.jsonl.gz"
    item_text: dict[int, dict[str, Any]] = {}
    if meta_path.is_file():
        meta = load_meta(meta_path, set(item_ids))
        item_text = {i: meta[a] | {"parent_asin": a} for a, i in item_ids.items() if a in meta}
    else:
        log.warning("%s not found: no item text (semantic IDs need it)", meta_path)
    return SequenceData(name=category, sequences=sequences, num_items=len(item_ids), item_text=item_text,
                        user_ids=users)


class Amazon2023DataModule(SeqRecDataModule):
    def __init__(self, dir: str, category: str, **kwargs):
        super().__init__(**kwargs)
        self.dir = dir
        self.category = category

    def load(self) -> SequenceData:
        return load_amazon2023(self.dir, self.category)
