"""Counts of the Office data as rucai splits it: python stats.py DATA_DIR OUT_JSON."""

import json
import sys
from pathlib import Path

from rucai.data.sequential import loo_split, train_windows
from rucai.utils.io import atomic_write_json

d = Path(sys.argv[1])
seqs = list(json.loads((d / "Office_Products.inter.json").read_text()).values())
tr, va, te = loo_split(seqs, 20)
out = {"data": str(d / "Office_Products.inter.json"), "users": len(seqs), "items": len({i for s in seqs for i in s}),
       "interactions": sum(map(len, seqs)), "train_pairs_prefix": len(tr),
       "train_windows_all_positions": len(train_windows(seqs, 20)), "valid_users": len(va), "test_users": len(te),
       "max_len": 20}
atomic_write_json(sys.argv[2], out)
print(out)
