"""Amazon Reviews in the LC-Rec/TIGER format (`<Name>.inter.json`, `<Name>.item.json`).

`<Name>.inter.json` maps user index -> chronological item indices (0-based); `<Name>.item.json`
maps item index -> {title, description, brand, ...}. Items are shifted to 1..N (0 = padding).
Get the files with `python -m rucai.data.download amazon18 --category <Name> --out <dir>`.
"""

from __future__ import annotations

import json
from pathlib import Path

from rucai.data.sequential import SeqRecDataModule, SequenceData
from rucai.errors import UserError


def load_lcrec(dir: str | Path, name: str) -> SequenceData:
    d = Path(dir).expanduser()
    inter = d / f"{name}.inter.json"
    if not d.is_dir():
        raise UserError(
            f"data.dir={d} does not exist; set data.dir=<folder with {name}.inter.json> "
            f"(or paths.data_dir=...), or download it: python -m rucai.data.download amazon18 "
            f"--category {name} --out {d}"
        )
    if not inter.is_file():
        found = sorted(p.name.removesuffix(".inter.json") for p in d.glob("*.inter.json"))
        hint = f"data.name={found[0]}" if found else "a folder holding <Name>.inter.json"
        raise UserError(f"{inter} not found (data.name={name!r}); did you mean {hint}?")
    raw = json.loads(inter.read_text())
    users = sorted(raw, key=lambda u: int(u) if str(u).isdigit() else str(u))
    items_file = d / f"{name}.item.json"
    item_text: dict[int, dict] = {}
    max_item = max((i for u in users for i in raw[u]), default=-1)
    if items_file.is_file():
        meta = json.loads(items_file.read_text())
        item_text = {int(k) + 1: v for k, v in meta.items()}
        max_item = max(max_item, max(int(k) for k in meta) if meta else -1)
    sequences = [[int(i) + 1 for i in raw[u]] for u in users]
    return SequenceData(name=name, sequences=sequences, num_items=max_item + 1, item_text=item_text, user_ids=users)


class LCRecDataModule(SeqRecDataModule):
    def __init__(self, dir: str, name: str, **kwargs):
        super().__init__(**kwargs)
        self.dir = dir
        self.name = name

    def load(self) -> SequenceData:
        return load_lcrec(self.dir, self.name)
