"""Profile two bf16 training steps of the paper-size TIGER on grouped Office batches (history 8-9), 1 thread.

    FAST_DROPOUT=0|1 RUCAI_DATA_DIR=../shared/data python experiments/tiger/results/speed/profile_step.py
"""

import os

import torch
from torch.profiler import ProfilerActivity, profile

from rucai.bench.tiger_train import _batches, _collate, _model, _train_step
from rucai.data.amazon import LCRecDataModule

torch.set_num_threads(1)
dm = LCRecDataModule(dir=os.environ.get("RUCAI_DATA_DIR", "../shared/data") + "/amazon18_office",
                     name="Office_Products", max_len=20, batch_size=256)
dm.setup("fit")
fast = os.environ.get("FAST_DROPOUT", "1") == "1"
m = _model(dm.num_items, 20, 0, fast_dropout=fast).train()
print("fast_dropout", fast, "attention", m.t5.config._attn_implementation)
opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
lengths = [min(len(h), 20) for h, _ in dm.split("train").pairs]
bs = [b for b in _batches(dm, True, 0, 0) if max(lengths[i] for i in b) in (8, 9)][:4]
for b in bs[:2]:  # warm-up
    _train_step(m, opt, _collate(dm, b), True)
with profile(activities=[ProfilerActivity.CPU]) as prof:
    for b in bs[2:4]:
        _train_step(m, opt, _collate(dm, b), True)
print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
