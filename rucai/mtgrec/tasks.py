"""MTGRec tasks: `mtgrec.tokenizers` -> `mtgrec.pretrain` -> `mtgrec.finetune`, and `mtgrec.pipeline`.

Each stage is a `rucai.runtime.stages.Stage` with its own folder (`<run dir>/<stage>` or
`method.<stage>.dir`) and a `done.json` holding its result; a stage done earlier is reused, and a
task builds the earlier stages it needs first. `tokenizers/`: tok_XX.json + tokenizers.json;
`pretrain/`: model.pt (T5 weights), curriculum.json, checkpoints/last.ckpt (every epoch, and on
SIGTERM / SLURM's pre-timeout signal); `finetune/`: checkpoints (best on the monitored validation
metric + last), eval CSVs. Under `ckpt_path=last` an interrupted Lightning stage resumes from its
`checkpoints/last.ckpt`, curriculum state included. Settings: `method` (rucai/mtgrec/config.py);
the T5's size comes from `model` (conf/model/tiger.yaml keys), the data from `data`.
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
              "feed_forward_proj", "num_beams", "constrained", "weight_decay", "topk")
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


def _val_subset(dm, n: int | None, seed: int):
    from torch.utils.data import DataLoader, Subset

    from rucai.mtgrec.curriculum import subset_indices

    loader = dm.val_dataloader()
    ds = loader.dataset
    idx = subset_indices(len(ds), n, seed)
    return DataLoader(Subset(ds, idx), batch_size=loader.batch_size, shuffle=False, collate_fn=loader.collate_fn)


# ----------------------------------------------------------------------------- stage 1


def tokenizers_stage(cfg: DictConfig, stage) -> dict[str, Any]:
    from rucai.mtgrec.tokenizers import build_tokenizers
    from rucai.rec.embeddings import encode_items

    tk = cfg.method.tokenizers
    dm = _datamodule(cfg)
    if not dm.data.item_text:
        raise UserError(f"data {cfg.data.get('name')} has no item text; MTGRec tokenizers need item titles")
    emb = encode_items(dm.data.item_text, encoder=tk.encoder, fields=tuple(tk.fields),
                       cache_dir=cfg.paths.cache_dir, num_items=dm.num_items)
    man = build_tokenizers(emb, stage.dir, num_tokenizers=int(tk.num_tokenizers), mode=tk.mode,
                           pca_dim=tk.pca_dim, rqvae=_plain(tk.rqvae), seed=int(tk.seed))
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
    from rucai.mtgrec.curriculum import CurriculumCallback, subset_indices
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
    trainer = runtime.trainer(cfg, stage.dir, max_epochs=epochs, gradient_clip_val=float(pt.max_grad_norm),
                              callbacks=[cb], monitor=False)
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


def finetune_stage(cfg: DictConfig, stage, summary: dict[str, Any] | None) -> dict[str, Any]:
    import torch
    from lightning.pytorch.callbacks import EarlyStopping

    from rucai import runtime
    from rucai.mtgrec.tokenizers import load_tokenizers
    from rucai.runtime.hardware import consolidated_test_checkpoint

    ft = cfg.method.finetune
    all_toks, manifest = load_tokenizers(_stage(cfg, "tokenizers").dir)
    which = _plain(ft.tokenizer)
    if which == "best":
        k = int(summary["best_tokenizer"]) if summary else len(all_toks) - 1
    elif which == "last":
        k = len(all_toks) - 1
    else:
        k = int(which)
    if not 0 <= k < len(all_toks):
        raise UserError(f"method.finetune.tokenizer={which}; must be best, last or 0..{len(all_toks) - 1}")
    runtime.seed(cfg)
    dm = _datamodule(cfg)
    model = _model(cfg, dm, [all_toks[k]], manifest, lr=float(cfg.model.lr), warmup=int(ft.warmup_steps),
                   test_num_beams=cfg.model.test_num_beams)
    if summary:
        state = torch.load(_stage(cfg, "pretrain").dir / "model.pt", map_location="cpu", weights_only=True)["t5"]
        model.t5.load_state_dict(state)
    # monitor=True: the callbacks group's best checkpoint + early stopping on cfg.monitor
    trainer = runtime.trainer(cfg, stage.dir, max_epochs=int(ft.epochs), gradient_clip_val=float(ft.max_grad_norm),
                              check_val_every_n_epoch=int(ft.val_every), monitor=True)
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
        "pretrained": summary is not None, "tokenizer": k, "test_num_beams": model.test_num_beams,
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
    import subprocess
    import sys

    from hydra.core.hydra_config import HydraConfig

    dirs = {n: _stage(cfg, n).dir.resolve() for n in ("tokenizers", *LIGHTNING_STAGES)}
    own = {"task", "hydra.run.dir", *(f"method.{n}.dir" for n in dirs)}
    over = [o for o in HydraConfig.get().overrides.task if o.split("=", 1)[0].lstrip("+~") not in own]
    over += [f"method.{n}.dir={d}" for n, d in dirs.items()]
    for name in names:
        cmd = [sys.executable, sys.argv[0], *over, f"task=mtgrec.{name}", f"hydra.run.dir={dirs[name] / 'process'}"]
        log.info("pipeline stage: %s", " ".join(cmd))
        if subprocess.run(cmd).returncode != 0 or _stage(cfg, name).wait_done() is None:
            raise UserError(f"pipeline stage {name} did not complete; see {dirs[name] / 'process'}/run.log "
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

