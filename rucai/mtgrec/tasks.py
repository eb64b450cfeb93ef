"""MTGRec tasks: `mtgrec.tokenizers` -> `mtgrec.pretrain` -> `mtgrec.finetune`, `mtgrec.pipeline`, and
`mtgrec.finetune_grid` (pre-training epochs x tokenizers, selected on validation).

Each stage is a `rucai.runtime.stages.Stage` with its own folder (`<run dir>/<stage>` or
`method.<stage>.dir`) and a `done.json` holding its result; a stage done earlier is reused, and a
task builds the earlier stages it needs first. `tokenizers/`: tok_XX.json + tokenizers.json;
`pretrain/`: model.pt (T5 weights), t5_epNNN.pt (the weights after each of `save_epochs`),
curriculum.json, checkpoints/last.ckpt (every epoch, and on SIGTERM / SLURM's pre-timeout signal);
`finetune/`: checkpoints (best on the monitored validation metric + last), eval CSVs;
`finetune_grid/`: one fine-tuning folder per cell `ep{E}_tok{K}/`, grid.csv, done.json (the cell
selected on validation and the whole grid). Batches: `effective_batch_size` examples per optimizer
step (gradient accumulation); warm-up counted in optimizer steps. Under `ckpt_path=last` an
interrupted Lightning stage resumes from its `checkpoints/last.ckpt`, curriculum state included.
Settings: `method` (rucai/mtgrec/config.py); the T5's size comes from `model` (conf/model/tiger.yaml
keys), the data from `data`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rucai.errors import UserError
from rucai.registry import task

log = logging.getLogger(__name__)

MODEL_KEYS = ("d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers", "num_heads", "dropout",
              "feed_forward_proj", "num_beams", "constrained", "invalid_beams", "user_token", "weight_decay", "topk")
LIGHTNING_STAGES = ("pretrain", "finetune")


# ----------------------------------------------------------------------------- helpers


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def _stage(cfg: DictConfig, name: str):
    from rucai.runtime.stages import Stage

    return Stage(cfg, name, dir=cfg.method[name].dir)


def _datamodule(cfg: DictConfig):
    from hydra.utils import instantiate

    dm = instantiate(cfg.data, _convert_="all")
    dm.setup("fit")
    return dm


def _model(cfg: DictConfig, dm, tokenizers: list, manifest: dict, lr: float, warmup: int, **kw):
    from rucai.mtgrec.model import MultiTokenizerTIGER

    mk = {k: _plain(cfg.model[k]) for k in MODEL_KEYS}
    return MultiTokenizerTIGER(num_items=dm.num_items, tokenizers=tokenizers, max_len=dm.max_len,
                               codebook_size=int(manifest["codebook_size"]), lr=lr, warmup_steps=warmup, **mk, **kw)


def grad_accumulation(effective: int | None, batch_size: int, world_size: int, key: str) -> int:
    """Batches accumulated per optimizer step so one step sees `effective` examples (the authors'
    4 GPUs x 256 = 1,024) from `batch_size` per device on `world_size` devices; null: 1."""
    if effective is None:
        return 1
    per_step = int(batch_size) * int(world_size)
    if int(effective) < per_step or int(effective) % per_step:
        raise UserError(f"{key}.effective_batch_size={effective} is not a multiple of data.batch_size x devices = "
                        f"{batch_size} x {world_size}; set it to a multiple of {per_step} (or null: no accumulation)")
    return int(effective) // per_step


def set_accumulation(trainer, dm, effective: Any, key: str) -> int:
    """Set the trainer's gradient accumulation from the effective batch size (world size known here)."""
    acc = grad_accumulation(_plain(effective), dm.train_batch_size(), trainer.world_size, key)
    trainer.accumulate_grad_batches = acc
    log.info("%s: %d batch(es) of %d x %d device(s) per optimizer step", key, acc, dm.train_batch_size(),
             trainer.world_size)
    return acc


def _val_subset(dm, n: int | None, seed: int):
    from torch.utils.data import DataLoader, Subset

    from rucai.mtgrec.curriculum import subset_indices

    loader = dm.val_dataloader()
    ds = loader.dataset
    idx = subset_indices(len(ds), n, seed)
    return DataLoader(Subset(ds, idx), batch_size=loader.batch_size, shuffle=False, collate_fn=loader.collate_fn)


# ----------------------------------------------------------------------------- stage 1


def tokenizers_stage(cfg: DictConfig, stage) -> dict[str, Any]:
    from rucai.data.sequential import train_items
    from rucai.mtgrec.tokenizers import build_tokenizers
    from rucai.rec.embeddings import encode_items

    tk = cfg.method.tokenizers
    dm = _datamodule(cfg)
    if not dm.data.item_text:
        raise UserError(f"data {cfg.data.get('name')} has no item text; MTGRec tokenizers need item titles")
    emb = encode_items(dm.data.item_text, encoder=tk.encoder, fields=tuple(tk.fields),
                       cache_dir=cfg.paths.cache_dir, num_items=dm.num_items)
    # the authors fit the RQ-VAE on the training items (items[:-2] of every user, tokenizer/main.py)
    man = build_tokenizers(emb, stage.dir, num_tokenizers=int(tk.num_tokenizers), mode=tk.mode,
                           pca_dim=tk.pca_dim, rqvae=_plain(tk.rqvae), seed=int(tk.seed),
                           fit_items=train_items(dm.data.sequences))
    log.info("tokenizers: %d in %s, adjacent drift %.3f (first code %.4f)", man["num_tokenizers"], stage.dir,
             man["mean_adjacent_changed"], man["mean_adjacent_changed_first_code"])
    return {k: man[k] for k in ("num_tokenizers", "mode", "codebook_size", "mean_adjacent_changed",
                                "mean_adjacent_changed_first_code", "first_vs_last_drift", "seconds")}


def run_tokenizers(cfg: DictConfig) -> dict[str, Any]:
    return _stage(cfg, "tokenizers").run(lambda st: tokenizers_stage(cfg, st))


# ----------------------------------------------------------------------------- stage 2


def _selected(tokenizers: list, use: Any) -> tuple[list, list[int]]:
    """Which tokenizers pre-training uses: all, or `last` (single tokenizer = TIGER), or a list."""
    K = len(tokenizers)
    if use == "all":
        idx = list(range(K))
    elif use == "last":
        idx = [K - 1]
    else:
        idx = [int(i) for i in (use if isinstance(use, list) else [use])]
        if any(not 0 <= i < K for i in idx):
            raise UserError(f"method.pretrain.use={use}; indices must be in 0..{K - 1} (or all, last)")
    return [tokenizers[i] for i in idx], idx


def pretrain_stage(cfg: DictConfig, stage) -> dict[str, Any]:
    import torch

    from rucai import runtime
    from rucai.mtgrec.curriculum import CurriculumCallback, T5Snapshots, subset_indices
    from rucai.mtgrec.tokenizers import load_tokenizers
    from rucai.utils.io import atomic_writer

    pt = cfg.method.pretrain
    all_toks, manifest = load_tokenizers(_stage(cfg, "tokenizers").dir)
    toks, idx = _selected(all_toks, _plain(pt.use))
    stages = [int(s) for s in pt.stages]
    epochs = int(pt.epochs)
    while stages and sum(stages) > epochs:  # as the authors: drop stages beyond the epoch budget
        stages = stages[:-1]
    runtime.seed(cfg)
    dm = _datamodule(cfg)
    model = _model(cfg, dm, toks, manifest, lr=float(pt.lr), warmup=int(pt.warmup_steps))
    train_loader = dm.train_dataloader()
    val_loader = dm.val_dataloader()
    inf_train = torch.utils.data.Subset(train_loader.dataset,
                                        subset_indices(len(train_loader.dataset), pt.influence_train_examples,
                                                       cfg.seed))
    inf_val = torch.utils.data.Subset(val_loader.dataset,
                                      subset_indices(len(val_loader.dataset), pt.influence_val_examples, cfg.seed + 1))
    cb = CurriculumCallback(stages, float(pt.tau), inf_train, inf_val, train_loader.collate_fn,
                            int(pt.influence_batch_size), stage.dir / "curriculum.json",
                            curriculum=bool(pt.curriculum), train_mode=bool(pt.train_mode))
    # monitor=False: no validation during pre-training (authors: val_delay 199), last.ckpt every epoch
    snaps = T5Snapshots(stage.dir, [int(e) for e in pt.save_epochs])
    trainer = runtime.trainer(cfg, stage.dir, max_epochs=epochs, gradient_clip_val=float(pt.max_grad_norm),
                              callbacks=[cb, snaps], monitor=False)
    acc = set_accumulation(trainer, dm, pt.effective_batch_size, "method.pretrain")
    probe = runtime.probe(trainer)
    ckpt = stage.resume_checkpoint()
    t0 = time.perf_counter()
    trainer.fit(model, train_dataloaders=train_loader, ckpt_path=ckpt)
    fit_s = time.perf_counter() - t0
    if trainer.is_global_zero:
        with atomic_writer(stage.dir / "model.pt", "wb") as f:
            torch.save({"t5": model.t5_state(), "tokenizers_used": idx}, f)
    # validation of the pre-trained model under every tokenizer (the authors' `all_scores`)
    vl = _val_subset(dm, pt.val_users, cfg.seed)
    per_tok = []
    for k in range(model.num_tokenizers):
        model.eval_tokenizer = k
        res = trainer.validate(model, dataloaders=vl, verbose=False)[0]
        per_tok.append({"tokenizer": idx[k], **{kk: float(vv) for kk, vv in res.items()}})
    sign = 1.0 if cfg.monitor.mode == "max" else -1.0
    best = max(per_tok, key=lambda r: sign * r[cfg.monitor.metric])
    ep_s = probe.epoch_seconds
    inf_s = [h.get("influence_seconds", 0.0) for h in cb.history]
    return {
        "tokenizers_used": idx,
        "stages": stages,
        "epochs": epochs,
        "accumulate_grad_batches": acc,
        "warmup_steps": int(pt.warmup_steps),
        "saved_epochs": sorted(e for e in snaps.epochs if e <= epochs),
        "curriculum": bool(pt.curriculum),
        "tau": float(pt.tau),
        "probs_per_stage": [h["probs"] for h in cb.history],
        "final_probs": model.select_prob.tolist(),
        "val_per_tokenizer": per_tok,
        "best_tokenizer": best["tokenizer"],
        "resumed_from": ckpt,
        "start_epoch": cb.start_epoch,
        "start_step": cb.start_step,
        "global_step": trainer.global_step,
        "fit_seconds": round(fit_s, 1),
        "sec_per_epoch": round(sum(ep_s) / max(len(ep_s), 1), 2),
        "influence_seconds_per_stage": inf_s,
        "influence_cost_vs_epoch": (round(sum(inf_s) / len(inf_s) / (sum(ep_s) / len(ep_s)), 3)
                                    if inf_s and ep_s and any(inf_s) else None),
        "influence_train_examples": len(inf_train),
        "influence_val_examples": len(inf_val),
        "train_examples": len(train_loader.dataset),
    }


# ----------------------------------------------------------------------------- stage 3


def finetune_stage(cfg: DictConfig, stage, summary: dict[str, Any] | None, tokenizer: int | None = None,
                   weights: Any = None) -> dict[str, Any]:
    """Fine-tune one tokenizer's TIGER in `stage.dir` and test its best validation checkpoint.

    tokenizer: an index (default: `method.finetune.tokenizer`); weights: the T5 weights to start from
    (default: `method.finetune.weights`, else the pre-training stage's final model.pt when `summary`,
    else a random init)."""
    import torch
    from lightning.pytorch.callbacks import EarlyStopping

    from rucai import runtime
    from rucai.mtgrec.tokenizers import load_tokenizers
    from rucai.runtime.hardware import consolidated_test_checkpoint

    ft = cfg.method.finetune
    all_toks, manifest = load_tokenizers(_stage(cfg, "tokenizers").dir)
    which = _plain(ft.tokenizer) if tokenizer is None else tokenizer
    if which == "best":
        k = int(summary["best_tokenizer"]) if summary else len(all_toks) - 1
    elif which == "last":
        k = len(all_toks) - 1
    else:
        k = int(which)
    if not 0 <= k < len(all_toks):
        raise UserError(f"method.finetune.tokenizer={which}; must be best, last or 0..{len(all_toks) - 1}")
    if weights is None:
        weights = _plain(ft.weights)
    if weights is None and summary:
        weights = _stage(cfg, "pretrain").dir / "model.pt"
    runtime.seed(cfg)
    dm = _datamodule(cfg)
    model = _model(cfg, dm, [all_toks[k]], manifest, lr=float(cfg.model.lr), warmup=int(ft.warmup_steps),
                   test_num_beams=cfg.model.test_num_beams)
    if weights is not None:
        state = torch.load(weights, map_location="cpu", weights_only=True)["t5"]
        model.t5.load_state_dict(state)
    # monitor=True: the callbacks group's best checkpoint + early stopping on cfg.monitor
    trainer = runtime.trainer(cfg, stage.dir, max_epochs=int(ft.epochs), gradient_clip_val=float(ft.max_grad_norm),
                              check_val_every_n_epoch=int(ft.val_every), monitor=True)
    set_accumulation(trainer, dm, ft.effective_batch_size, "method.finetune")
    for c in trainer.callbacks:
        if isinstance(c, EarlyStopping):
            c.patience = int(ft.patience)
    probe = runtime.probe(trainer)
    ckpt = stage.resume_checkpoint()
    vl = _val_subset(dm, ft.val_users, cfg.seed)
    t0 = time.perf_counter()
    trainer.fit(model, train_dataloaders=dm.train_dataloader(), val_dataloaders=vl, ckpt_path=ckpt)
    fit_s = time.perf_counter() - t0
    best_cb = trainer.checkpoint_callback
    best = (best_cb.best_model_path if best_cb is not None else "") or None
    if best is None:
        log.warning("finetune: no best checkpoint recorded; testing the current weights")
    res = trainer.test(model, dataloaders=dm.test_dataloader(), ckpt_path=consolidated_test_checkpoint(trainer, best),
                       verbose=False)[0]
    ep = probe.epoch_seconds
    return {
        "pretrained": weights is not None, "weights": None if weights is None else str(weights),
        "tokenizer": k, "test_num_beams": model.test_num_beams,
        "accumulate_grad_batches": trainer.accumulate_grad_batches,
        "epochs_trained": trainer.current_epoch, "start_epoch": probe.start_epoch, "resumed_from": ckpt,
        "best_ckpt": best,
        "best_val": float(best_cb.best_model_score) if best_cb is not None and best_cb.best_model_score is not None
        else None,
        "fit_seconds": round(fit_s, 1), "sec_per_epoch": round(sum(ep) / max(len(ep), 1), 2),
        **{kk: float(vv) for kk, vv in res.items()},
    }


# ----------------------------------------------------------------------------- running stages


def _multi_process(cfg: DictConfig) -> bool:
    from rucai.runtime.hardware import requested_devices

    n = requested_devices(cfg.hardware)
    return (n is None or n > 1 or int(cfg.hardware.num_nodes) > 1) and cfg.hardware.strategy not in ("auto", None)


def _stages_in_subprocesses(cfg: DictConfig, names: list[str]) -> None:
    """Under DDP each Lightning stage runs as its own `run.py task=mtgrec.<stage>` process.

    Lightning's DDP launcher re-runs the script for ranks > 0 once per process; a second Trainer in
    the same process would launch a second set of ranks and hang. One stage per process avoids it:
    each process finds the earlier stages done (their done.json) and runs just its own; this
    process then reuses them all. Each stage process keeps its record in `<stage dir>/process/`.
    """
    for name in names:
        _stage_process(cfg, _stage(cfg, name), [f"task=mtgrec.{name}"])


def _stage_process(cfg: DictConfig, stage, extra: list[str]) -> None:
    """Run `run.py <this run's overrides> <extra>` (stage folders pinned to this run's) for `stage`."""
    import subprocess
    import sys

    from hydra.core.hydra_config import HydraConfig

    dirs = {n: _stage(cfg, n).dir.resolve() for n in ("tokenizers", *LIGHTNING_STAGES)}
    keys = {o.split("=", 1)[0] for o in extra}
    own = {"task", "hydra.run.dir", *(f"method.{n}.dir" for n in dirs), *keys}
    over = [o for o in HydraConfig.get().overrides.task if o.split("=", 1)[0].lstrip("+~") not in own]
    over += [f"method.{n}.dir={d}" for n, d in dirs.items() if f"method.{n}.dir" not in keys]
    proc_dir = stage.dir.resolve() / "process"
    cmd = [sys.executable, sys.argv[0], *over, *extra, f"hydra.run.dir={proc_dir}"]
    log.info("pipeline stage: %s", " ".join(cmd))
    if subprocess.run(cmd).returncode != 0 or stage.wait_done() is None:
        raise UserError(f"pipeline stage {stage.name} did not complete; see {proc_dir}/run.log "
                        f"and rerun with ckpt_path=last to resume")


def run_stages(cfg: DictConfig, last: str) -> dict[str, dict[str, Any]]:
    """Run (or reuse) every stage up to `last`; their results by stage name."""
    names = ["tokenizers", *(["pretrain"] if cfg.method.pretrain.enabled else []), "finetune"]
    names = names[: names.index(last) + 1] if last in names else names
    out = {"tokenizers": run_tokenizers(cfg)}
    todo = [n for n in names if n in LIGHTNING_STAGES and _stage(cfg, n).done() is None]
    if len(todo) > 1 and _multi_process(cfg):
        _stages_in_subprocesses(cfg, todo)
    if "pretrain" in names:
        out["pretrain"] = _stage(cfg, "pretrain").run(lambda st: pretrain_stage(cfg, st))
    if "finetune" in names:
        out["finetune"] = _stage(cfg, "finetune").run(lambda st: finetune_stage(cfg, st, out.get("pretrain")))
    return out


# ----------------------------------------------------------------------------- fine-tuning grid


def _grid_dir(cfg: DictConfig):
    from pathlib import Path

    d = cfg.method.finetune_grid.dir
    return Path(d) if d else Path(cfg.paths.output_dir) / "finetune_grid"


def grid_cells(cfg: DictConfig) -> list[tuple[int, int]]:
    """(pre-training epoch, tokenizer index) of every grid cell, epochs outer; checked against what
    pre-training keeps (`method.pretrain.save_epochs` and its final epoch)."""
    g, pt = cfg.method.finetune_grid, cfg.method.pretrain
    epochs, toks = [int(e) for e in g.epochs], [int(k) for k in g.tokenizers]
    if not epochs or not toks:
        raise UserError("method.finetune_grid.epochs and method.finetune_grid.tokenizers must be non-empty lists")
    kept = {int(e) for e in pt.save_epochs if int(e) <= int(pt.epochs)} | {int(pt.epochs)}
    if missing := [e for e in epochs if e not in kept]:
        raise UserError(f"method.finetune_grid.epochs {missing} are not kept by pre-training (kept: {sorted(kept)}); "
                        f"add them to method.pretrain.save_epochs")
    return [(e, k) for e in epochs for k in toks]


def _cell(cfg: DictConfig, epoch: int, tok: int):
    from rucai.runtime.stages import Stage

    name = f"ep{epoch}_tok{tok}"
    return Stage(cfg, f"finetune_grid/{name}", dir=_grid_dir(cfg) / name)


def _cell_weights(cfg: DictConfig, epoch: int):
    from rucai.mtgrec.curriculum import snapshot_path

    pt_dir = _stage(cfg, "pretrain").dir
    snap = snapshot_path(pt_dir, epoch)
    return snap if snap.is_file() or epoch != int(cfg.method.pretrain.epochs) else pt_dir / "model.pt"


def finetune_grid_stage(cfg: DictConfig, stage, summary: dict[str, Any]) -> dict[str, Any]:
    """Fine-tune every grid cell (each its own resumable stage folder), select on validation."""
    import csv

    from rucai.utils.io import atomic_writer

    metric, mode = cfg.monitor.metric, cfg.monitor.mode
    rows = []
    for e, k in grid_cells(cfg):
        res = _cell(cfg, e, k).run(lambda st, e=e, k=k: finetune_stage(cfg, st, summary, tokenizer=k,
                                                                       weights=_cell_weights(cfg, e)))
        rows.append({"epoch": e, "tokenizer": k, metric: res["best_val"],
                     **{kk: v for kk, v in res.items() if kk.startswith("test/")}})
    scored = [r for r in rows if r[metric] is not None]
    if not scored:
        raise UserError(f"finetune_grid: no cell recorded a validation {metric}; check method.finetune.val_every")
    sign = 1.0 if mode == "max" else -1.0
    best = max(scored, key=lambda r: sign * r[metric])  # first best cell on ties
    test_keys = sorted({kk for r in rows for kk in r if kk.startswith("test/")})
    with atomic_writer(stage.dir / "grid.csv", "w") as f:
        w = csv.DictWriter(f, fieldnames=["epoch", "tokenizer", metric, *test_keys])
        w.writeheader()
        w.writerows(rows)
    return {
        "selected_on": f"{metric} ({mode})", "best_epoch": best["epoch"], "best_tokenizer": best["tokenizer"],
        metric: best[metric], **{kk: best[kk] for kk in test_keys if kk in best},
        # what the authors' ensemble_results.py prints ("Max Results": each metric's maximum over test
        # files); optimistic, reported for comparison only
        "test_max_over_cells": {kk: max(r[kk] for r in rows if kk in r) for kk in test_keys},
        "grid": rows,
    }


def _grid_in_subprocesses(cfg: DictConfig) -> None:
    """Under DDP: pre-training and each undone cell in its own process (see `_stages_in_subprocesses`);
    a cell runs as `task=mtgrec.finetune` in its folder with its tokenizer and weights."""
    run_tokenizers(cfg)
    if _stage(cfg, "pretrain").done() is None:
        _stages_in_subprocesses(cfg, ["pretrain"])
    for e, k in grid_cells(cfg):
        st = _cell(cfg, e, k)
        if st.done() is None:
            _stage_process(cfg, st, ["task=mtgrec.finetune", f"method.finetune.dir={st.dir.resolve()}",
                                     f"method.finetune.tokenizer={k}",
                                     f"method.finetune.weights={_cell_weights(cfg, e).resolve()}"])


def _guard(fn):
    """A run stopped by SIGTERM (a checkpoint was saved) returns `status: interrupted`."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    try:
        return fn()
    except SIGTERMException:
        log.warning("interrupted; resume with ckpt_path=last in the same hydra.run.dir")
        return {"status": "interrupted"}


# ----------------------------------------------------------------------------- tasks


@task("mtgrec.tokenizers")
def tokenizers_task(cfg: DictConfig) -> dict[str, Any]:
    return run_tokenizers(cfg)


@task("mtgrec.pretrain")
def pretrain_task(cfg: DictConfig) -> dict[str, Any]:
    if not cfg.method.pretrain.enabled:
        raise UserError("task=mtgrec.pretrain with method.pretrain.enabled=false: nothing to run")

    def go() -> dict[str, Any]:
        s = run_stages(cfg, "pretrain")["pretrain"]
        return {k: s[k] for k in ("best_tokenizer", "final_probs", "sec_per_epoch", "influence_cost_vs_epoch",
                                  "start_epoch", "start_step", "global_step")}

    return _guard(go)


@task("mtgrec.finetune")
def finetune_task(cfg: DictConfig) -> dict[str, Any]:
    return _guard(lambda: run_stages(cfg, "finetune")["finetune"])


@task("mtgrec.finetune_grid")
def finetune_grid_task(cfg: DictConfig) -> dict[str, Any]:
    """tokenizers -> pre-train (keeping `save_epochs`) -> fine-tune every (epoch, tokenizer) cell of
    `method.finetune_grid` -> the cell with the best validation metric and its test metrics."""
    from rucai.runtime.stages import Stage

    if not cfg.method.pretrain.enabled:
        raise UserError("task=mtgrec.finetune_grid fine-tunes pre-training checkpoints; "
                        "method.pretrain.enabled=false leaves none (use task=mtgrec.finetune)")
    grid_cells(cfg)  # fail on a bad grid before any training

    def go() -> dict[str, Any]:
        grid = Stage(cfg, "finetune_grid", dir=_grid_dir(cfg))
        if grid.done() is None and _multi_process(cfg):
            _grid_in_subprocesses(cfg)
        summary = run_stages(cfg, "pretrain")["pretrain"]
        return grid.run(lambda st: finetune_grid_stage(cfg, st, summary))

    return _guard(go)


@task("mtgrec.pipeline")
def pipeline_task(cfg: DictConfig) -> dict[str, Any]:
    """tokenizers -> pre-train (unless method.pretrain.enabled=false) -> fine-tune -> test."""
    t0 = time.perf_counter()

    def go() -> dict[str, Any]:
        res = run_stages(cfg, "finetune")
        out = dict(res["finetune"]) | {"total_seconds": round(time.perf_counter() - t0, 1),
                                        "tokenizer_drift": res["tokenizers"]["mean_adjacent_changed"]}
        if "pretrain" in res:
            s = res["pretrain"]
            out |= {"probs_per_stage": s["probs_per_stage"], "influence_cost_vs_epoch": s["influence_cost_vs_epoch"],
                    "pretrain_sec_per_epoch": s["sec_per_epoch"], "pretrain_start_step": s["start_step"]}
        return out

    return _guard(go)

