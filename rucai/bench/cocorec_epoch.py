"""Training-epoch cost of CoCoRec relative to SASRec, measured side by side in one run.

    python -m rucai.bench.cocorec_epoch --data-dir ../shared/data --threads 1 --rounds 3 \
        --out experiments/cocorec/results/epoch_cost/epoch_cost.json

Each variant is an experiment composed exactly as `run.py` would (`experiment=<name>` plus the
overrides given), built through the same code as the train task (`rucai.tasks.build`; CoCoRec's item
codes from its cache). One training epoch = every batch of the experiment's training loader through
forward, backward and the experiment's optimizer step (plain loop, no Lightning bookkeeping, which
is the same for both; `hardware.precision=bf16-mixed` runs the forward under CPU bf16 autocast). The variants take turns (round-robin), so load on a shared machine hits them
alike; the report gives seconds per epoch (median over rounds) and the ratio to the first variant.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

DEFAULT_VARIANTS = (
    "sasrec/office",
    "sasrec/office:data.train_mode=prefix,data.batch_size=400",
    "cocorec/office_cpu",
)


def _build(spec: str, data_dir: str, seed: int):
    import tempfile

    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from rucai import cli, schema
    from rucai.tasks import build

    exp, _, rest = spec.partition(":")
    overrides = [f"experiment={exp}", f"paths.data_dir={data_dir}", f"seed={seed}", "logger=none",
                 "callbacks=none", f"paths.output_dir={tempfile.mkdtemp(prefix='rucai_bench_')}"]
    overrides += [o for o in rest.split(",") if o]
    schema.register()
    with initialize_config_dir(version_base="1.3", config_dir=str(cli.CONF_DIR), job_name="bench"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # ${hydra:...} interpolations (the experiment's name)
    feats = None
    if cfg.task == "cocorec.train":
        from rucai.cocorec.tasks import item_features

        feats = item_features(cfg)
    dm, model, _ = build(cfg, feats)
    opt = model.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    model.log = lambda *a, **k: None  # no trainer attached
    bf16 = str(cfg.hardware.precision).startswith("bf16")  # bf16-mixed: autocast, as Lightning on CPU
    return dm, model, opt, bf16


def _epoch(dm, model, opt, bf16: bool, epoch: int) -> tuple[float, int]:
    import contextlib

    import torch

    model.train()
    loader = dm.train_dataloader()
    if hasattr(getattr(loader, "batch_sampler", None), "set_epoch"):
        loader.batch_sampler.set_epoch(epoch)
    torch.manual_seed(epoch)
    t0 = time.perf_counter()
    n = 0
    for batch in loader:
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            loss = model.training_step(batch, n)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += 1
    return time.perf_counter() - t0, n


def run(variants: list[str], data_dir: str, rounds: int, seed: int) -> dict[str, Any]:
    built = {v: _build(v, data_dir, seed) for v in variants}
    secs: dict[str, list[float]] = {v: [] for v in variants}
    steps: dict[str, int] = {}
    for r in range(rounds):
        for v in variants:
            s, n = _epoch(*built[v], epoch=r)
            secs[v].append(round(s, 3))
            steps[v] = n
    base = statistics.median(secs[variants[0]])
    return {v: {"sec_per_epoch_rounds": secs[v], "sec_per_epoch_median": statistics.median(secs[v]),
                "steps_per_epoch": steps[v], "ratio_to_first": round(statistics.median(secs[v]) / base, 3)}
            for v in variants}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rucai.bench.cocorec_epoch", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.environ.get("RUCAI_DATA_DIR", "../shared/data"))
    p.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS),
                   help="experiment[:override,override...]; the first is the baseline")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    res = {"variants": run(a.variants, a.data_dir, a.rounds, a.seed), "threads": a.threads, "rounds": a.rounds,
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_1min": os.getloadavg()[0]}
    text = json.dumps(res, indent=2)
    print(text)
    if a.out:
        from rucai.utils.io import atomic_write_text

        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(a.out, text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
