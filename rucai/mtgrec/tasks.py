"""MTGRec tasks: `mtgrec.tokenizers` -> `mtgrec.pretrain` -> `mtgrec.finetune`, and `mtgrec.pipeline`.

Every stage writes into a folder of the run's output directory (or `method.<stage>.dir`) and the
next stage reads it from there: `tokenizers/` (tokenizers.json + tok_XX.json), `pretrain/`
(model.pt, curriculum.json, summary.json), `finetune/` (checkpoints, eval CSVs, metrics.json). A
stage whose artifacts are already present is reused, not recomputed; a stage run alone builds any
missing earlier stage first. Config: `method` (see experiments/mtgrec/office.yaml); the T5 size
comes from `model` (conf/model/tiger.yaml keys), the data from `data`.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rucai.errors import UserError
from rucai.registry import task

log = logging.getLogger(__name__)

MODEL_KEYS = ("d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers", "num_heads", "dropout",
              "feed_forward_proj", "num_beams", "constrained", "weight_decay", "topk")


# ----------------------------------------------------------------------------- config helpers


def _m(cfg: DictConfig, *path: str, default: Any = None) -> Any:
    node: Any = cfg.method or {}
    for p in path:
        if node is None or p not in node:
            return default
        node = node[p]
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def _out(cfg: DictConfig) -> Path:
    return Path(cfg.paths.output_dir)


def _stage_dir(cfg: DictConfig, stage: str) -> Path:
    d = _m(cfg, stage, "dir")
    return Path(d) if d else _out(cfg) / stage


def _smoke(cfg: DictConfig) -> bool:
    return bool(cfg.get("smoke", False))


def _datamodule(cfg: DictConfig):
    from hydra.utils import instantiate

    data = OmegaConf.to_container(cfg.data, resolve=True)
    data.pop("semantic_ids", None)  # tokenizers come from the MTGRec stage, not the data hook
    if _smoke(cfg):
        data["max_users"] = min(data.get("max_users") or 100, 100)
    dm = instantiate(data, _convert_="all")
    dm.setup("fit")
    return dm


def _trainer(cfg: DictConfig, out: Path, max_epochs: int, callbacks: list, validate: bool, **kw):
    import lightning as L

    from rucai.runtime import hardware
    from rucai.tasks import _route_library_logs

    _route_library_logs()
    hardware.check(cfg.hardware)
    t = cfg.trainer
    return L.Trainer(
        max_epochs=max_epochs,
        callbacks=callbacks,
        logger=False,
        default_root_dir=str(out),
        enable_checkpointing=any(type(c).__name__ == "ModelCheckpoint" for c in callbacks),
        num_sanity_val_steps=0,
        limit_train_batches=t.get("limit_train_batches"),
        limit_val_batches=(t.get("limit_val_batches") if validate else 0),
        limit_test_batches=t.get("limit_test_batches"),
        log_every_n_steps=t.get("log_every_n_steps", 50),
        enable_progress_bar=bool(t.get("enable_progress_bar", False)),
        enable_model_summary=False,
        **kw,
        **hardware.trainer_kwargs(cfg.hardware),
    )


def _model(cfg: DictConfig, dm, tokenizers: list, manifest: dict, lr: float, warmup: int):
    from rucai.mtgrec.model import MultiTokenizerTIGER

    mk = {k: cfg.model[k] for k in MODEL_KEYS if k in cfg.model}
    mk = OmegaConf.to_container(OmegaConf.create(mk), resolve=True)
    if _smoke(cfg):  # a tiny T5: the smoke run checks the wiring, not the model
        mk |= {"d_model": 16, "d_kv": 8, "d_ff": 32, "num_layers": 1, "num_decoder_layers": 1, "num_heads": 2}
    return MultiTokenizerTIGER(num_items=dm.num_items, tokenizers=tokenizers, max_len=dm.max_len,
                               codebook_size=int(manifest["codebook_size"]), lr=lr, warmup_steps=warmup, **mk)


def _val_subset(dm, n: int | None, seed: int):
    from rucai.mtgrec.curriculum import subset_indices

    loader = dm.val_dataloader()
    from torch.utils.data import DataLoader, Subset

    ds = loader.dataset
    idx = subset_indices(len(ds), n, seed)
    return DataLoader(Subset(ds, idx), batch_size=loader.batch_size, shuffle=False, collate_fn=loader.collate_fn)


# ----------------------------------------------------------------------------- stage 1


def run_tokenizers(cfg: DictConfig) -> dict[str, Any]:
    from rucai.mtgrec.tokenizers import MANIFEST, build_tokenizers
    from rucai.rec.embeddings import encode_items

    d = _stage_dir(cfg, "tokenizers")
    if (d / MANIFEST).is_file():
        log.info("tokenizers: reusing %s", d)
        return json.loads((d / MANIFEST).read_text())
    tk = _m(cfg, "tokenizers", default={}) or {}
    rq = dict(tk.get("rqvae") or {})
    K = int(tk.get("num_tokenizers", 5))
    if _smoke(cfg):
        rq |= {"epochs": 3, "layers": [64], "num_codes": [16, 16, 16], "kmeans_iters": 5}
        K = min(K, 2)
    dm = _datamodule(cfg)
    if not dm.data.item_text:
        raise UserError(f"data {cfg.data.get('name')} has no item text; MTGRec tokenizers need item titles")
    emb = encode_items(dm.data.item_text, encoder=tk.get("encoder", "all-minilm-l6-v2"),
                       fields=tuple(tk.get("fields", ("title", "brand", "description"))),
                       cache_dir=cfg.paths.cache_dir, num_items=dm.num_items)
    man = build_tokenizers(emb, d, num_tokenizers=K, mode=tk.get("mode", "epochs"),
                           pca_dim=tk.get("pca_dim", 128), rqvae=rq, seed=int(tk.get("seed", 2024)))
    log.info("tokenizers: %d in %s, adjacent drift %.3f (first code %.4f)", K, d,
             man["mean_adjacent_changed"], man["mean_adjacent_changed_first_code"])
    return man


@task("mtgrec.tokenizers")
def tokenizers_task(cfg: DictConfig) -> dict[str, Any]:
    from rucai.utils.io import atomic_write_json

    man = run_tokenizers(cfg)
    out = {"experiment": cfg.experiment_name, "task": cfg.task, "status": "completed",
           **{k: man[k] for k in ("num_tokenizers", "mode", "mean_adjacent_changed",
                                   "mean_adjacent_changed_first_code", "first_vs_last_drift")}}
    atomic_write_json(_out(cfg) / "metrics.json", out)
    return out


# ----------------------------------------------------------------------------- stage 2


def _selected(tokenizers: list, manifest: dict, use: Any) -> tuple[list, list[int]]:
    """Which tokenizers pre-training uses: all, or `last` (single tokenizer = TIGER), or a list."""
    K = len(tokenizers)
    if use in (None, "all"):
        idx = list(range(K))
    elif use == "last":
        idx = [K - 1]
    else:
        idx = [int(i) for i in (use if isinstance(use, list) else [use])]
        if any(not 0 <= i < K for i in idx):
            raise UserError(f"method.pretrain.use={use}; indices must be in 0..{K - 1}")
    return [tokenizers[i] for i in idx], idx


def run_pretrain(cfg: DictConfig) -> dict[str, Any]:
    import lightning as L
    import torch

    from rucai.mtgrec.curriculum import CurriculumCallback, subset_indices
    from rucai.mtgrec.tokenizers import load_tokenizers
    from rucai.utils.io import atomic_write_json, atomic_writer

    d = _stage_dir(cfg, "pretrain")
    if (d / "summary.json").is_file() and (d / "model.pt").is_file():
        log.info("pretrain: reusing %s", d)
        return json.loads((d / "summary.json").read_text())
    run_tokenizers(cfg)
    all_toks, manifest = load_tokenizers(_stage_dir(cfg, "tokenizers"))
    pt = _m(cfg, "pretrain", default={}) or {}
    toks, idx = _selected(all_toks, manifest, pt.get("use", "all"))
    stages = [int(s) for s in pt.get("stages", [60, 20, 20, 20, 20, 20, 20])]
    epochs = int(pt.get("epochs", 200))
    n_inf_train, n_inf_val = pt.get("influence_train_examples"), pt.get("influence_val_examples")
    val_users = pt.get("val_users")
    if _smoke(cfg):
        stages, epochs, n_inf_train, n_inf_val, val_users = [1], 2, 32, 16, 16
    while stages and sum(stages) > epochs:  # as the authors: drop stages beyond the epoch budget
        stages = stages[:-1]
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = _datamodule(cfg)
    model = _model(cfg, dm, toks, manifest, lr=float(pt.get("lr", 5e-3)), warmup=int(pt.get("warmup_steps", 0)))
    train_loader = dm.train_dataloader()
    val_loader = dm.val_dataloader()
    inf_train = torch.utils.data.Subset(train_loader.dataset,
                                        subset_indices(len(train_loader.dataset), n_inf_train, cfg.seed))
    inf_val = torch.utils.data.Subset(val_loader.dataset,
                                      subset_indices(len(val_loader.dataset), n_inf_val, cfg.seed + 1))
    cb = CurriculumCallback(stages, float(pt.get("tau", 1.0)), inf_train, inf_val, train_loader.collate_fn,
                            int(pt.get("influence_batch_size", dm.batch_size)), d / "curriculum.json",
                            curriculum=bool(pt.get("curriculum", True)), train_mode=bool(pt.get("train_mode", True)))
    from rucai.callbacks import StartEpoch

    probe = StartEpoch()
    trainer = _trainer(cfg, d, epochs, [cb, probe], validate=True,
                       gradient_clip_val=pt.get("max_grad_norm", 1.0))
    t0 = time.perf_counter()
    trainer.fit(model, train_dataloaders=train_loader)
    fit_s = time.perf_counter() - t0
    if trainer.is_global_zero:
        with atomic_writer(d / "model.pt", "wb") as f:
            torch.save({"t5": model.t5_state(), "tokenizers_used": idx}, f)
    # validation of the pre-trained model under every tokenizer (the authors' `all_scores`)
    vl = _val_subset(dm, val_users, cfg.seed)
    per_tok = []
    for k in range(model.num_tokenizers):
        model.eval_tokenizer = k
        res = trainer.validate(model, dataloaders=vl, verbose=False)[0]
        per_tok.append({"tokenizer": idx[k], **{kk: float(vv) for kk, vv in res.items()}})
    best = max(per_tok, key=lambda r: r.get("val/ndcg@10", -1.0))
    ep_s = probe.epoch_seconds
    inf_s = [h.get("influence_seconds", 0.0) for h in cb.history]
    summary = {
        "tokenizers_used": idx,
        "stages": stages,
        "epochs": epochs,
        "curriculum": bool(pt.get("curriculum", True)),
        "tau": float(pt.get("tau", 1.0)),
        "probs_per_stage": [h["probs"] for h in cb.history],
        "final_probs": model.select_prob.tolist(),
        "val_per_tokenizer": per_tok,
        "best_tokenizer": best["tokenizer"],
        "fit_seconds": round(fit_s, 1),
        "sec_per_epoch": round(sum(ep_s) / max(len(ep_s), 1), 2),
        "influence_seconds_per_stage": inf_s,
        "influence_cost_vs_epoch": (round(sum(inf_s) / len(inf_s) / (sum(ep_s) / len(ep_s)), 3)
                                    if inf_s and ep_s and any(inf_s) else None),
        "influence_train_examples": len(inf_train),
        "influence_val_examples": len(inf_val),
        "train_examples": len(train_loader.dataset),
    }
    if trainer.is_global_zero:
        atomic_write_json(d / "summary.json", summary)
    return summary


@task("mtgrec.pretrain")
def pretrain_task(cfg: DictConfig) -> dict[str, Any]:
    from rucai.utils.io import atomic_write_json

    s = run_pretrain(cfg)
    out = {"experiment": cfg.experiment_name, "task": cfg.task, "status": "completed"} | {
        k: s[k] for k in ("best_tokenizer", "final_probs", "sec_per_epoch", "influence_cost_vs_epoch")}
    atomic_write_json(_out(cfg) / "metrics.json", out)
    return out


# ----------------------------------------------------------------------------- stage 3


def run_finetune(cfg: DictConfig) -> dict[str, Any]:
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from rucai.callbacks import EvalCSV, StartEpoch
    from rucai.mtgrec.tokenizers import load_tokenizers
    from rucai.utils.io import atomic_write_json

    d = _stage_dir(cfg, "finetune")
    if (d / "metrics.json").is_file():
        log.info("finetune: reusing %s", d)
        return json.loads((d / "metrics.json").read_text())
    ft = _m(cfg, "finetune", default={}) or {}
    pretrained = bool(_m(cfg, "pretrain", "enabled", default=True))
    summary = run_pretrain(cfg) if pretrained else None
    run_tokenizers(cfg)
    all_toks, manifest = load_tokenizers(_stage_dir(cfg, "tokenizers"))
    which = ft.get("tokenizer", "best")
    if which == "best":
        k = int(summary["best_tokenizer"]) if summary else len(all_toks) - 1
    elif which == "last":
        k = len(all_toks) - 1
    else:
        k = int(which)
    if not 0 <= k < len(all_toks):
        raise UserError(f"method.finetune.tokenizer={which}; must be best, last or 0..{len(all_toks) - 1}")
    epochs, patience, val_users = int(ft.get("epochs", 100)), int(ft.get("patience", 10)), ft.get("val_users")
    if _smoke(cfg):
        epochs, val_users = 1, 16
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = _datamodule(cfg)
    model = _model(cfg, dm, [all_toks[k]], manifest, lr=float(ft.get("lr", 2e-4)),
                   warmup=int(ft.get("warmup_steps", 0)))
    model.test_num_beams = int(ft.get("test_num_beams", 50))
    if summary:
        state = torch.load(_stage_dir(cfg, "pretrain") / "model.pt", map_location="cpu", weights_only=False)["t5"]
        model.t5.load_state_dict(state)
    monitor = cfg.monitor.metric
    ckpt = ModelCheckpoint(dirpath=str(d / "checkpoints"), filename="best", monitor=monitor, mode=cfg.monitor.mode,
                           save_top_k=1, save_last=False)
    probe = StartEpoch()
    cbs = [ckpt, EarlyStopping(monitor=monitor, mode=cfg.monitor.mode, patience=patience), EvalCSV(str(d / "eval")),
           probe]
    trainer = _trainer(cfg, d, epochs, cbs, validate=True, gradient_clip_val=ft.get("max_grad_norm", 1.0),
                       check_val_every_n_epoch=int(ft.get("val_every", 1)))
    vl = _val_subset(dm, val_users, cfg.seed)
    t0 = time.perf_counter()
    trainer.fit(model, train_dataloaders=dm.train_dataloader(), val_dataloaders=vl)
    fit_s = time.perf_counter() - t0
    best = ckpt.best_model_path or None
    res = trainer.test(model, dataloaders=dm.test_dataloader(), ckpt_path=best, verbose=False)[0]
    ep = probe.epoch_seconds
    metrics = {
        "experiment": cfg.experiment_name, "seed": cfg.seed, "status": "completed",
        "pretrained": pretrained, "tokenizer": k, "test_num_beams": model.test_num_beams,
        "epochs_trained": trainer.current_epoch, "best_ckpt": best,
        "best_val": float(ckpt.best_model_score) if ckpt.best_model_score is not None else None,
        "fit_seconds": round(fit_s, 1), "sec_per_epoch": round(sum(ep) / max(len(ep), 1), 2),
        **{kk: float(vv) for kk, vv in res.items()},
    }
    if trainer.is_global_zero:
        atomic_write_json(d / "metrics.json", metrics)
    return metrics


@task("mtgrec.finetune")
def finetune_task(cfg: DictConfig) -> dict[str, Any]:
    from rucai.utils.io import atomic_write_json

    m = run_finetune(cfg)
    atomic_write_json(_out(cfg) / "metrics.json", m | {"task": cfg.task})
    return m


def _multi_process(cfg: DictConfig) -> bool:
    from rucai.runtime.hardware import requested_devices

    n = requested_devices(cfg.hardware)
    return (n is None or n > 1 or int(cfg.hardware.num_nodes) > 1) and cfg.hardware.strategy not in ("auto", None)


def _stages_in_subprocesses(cfg: DictConfig, stages: list[str]) -> None:
    """Under DDP each stage runs as its own `run.py task=mtgrec.<stage>` in the same output dir.

    Lightning's DDP launcher re-runs the script for ranks > 0 once per process; a second Trainer in
    the same process would launch a second set of ranks and hang. One stage per process avoids it,
    and each stage picks the previous stage's artifacts up from the directory.
    """
    import subprocess
    import sys

    from hydra.core.hydra_config import HydraConfig

    over = [o for o in HydraConfig.get().overrides.task if o.split("=", 1)[0] not in ("task", "hydra.run.dir")]
    for st in stages:
        cmd = [sys.executable, sys.argv[0], *over, f"task={st}", f"hydra.run.dir={_out(cfg)}"]
        log.info("pipeline stage: %s", " ".join(cmd))
        if subprocess.run(cmd).returncode != 0:
            raise UserError(f"pipeline stage {st} failed; see {_out(cfg)}/run.log and rerun to resume")


@task("mtgrec.pipeline")
def pipeline_task(cfg: DictConfig) -> dict[str, Any]:
    """tokenizers -> pre-train (unless method.pretrain.enabled=false) -> fine-tune -> test."""
    from rucai.utils.io import atomic_write_json

    t0 = time.perf_counter()
    man = run_tokenizers(cfg)
    pretrain = bool(_m(cfg, "pretrain", "enabled", default=True))
    if _multi_process(cfg):
        _stages_in_subprocesses(cfg, ["mtgrec.pretrain"] * pretrain + ["mtgrec.finetune"])
    summary = run_pretrain(cfg) if pretrain else None
    m = run_finetune(cfg)
    out = dict(m) | {"task": cfg.task, "total_seconds": round(time.perf_counter() - t0, 1),
                     "tokenizer_drift": man.get("mean_adjacent_changed")}
    if summary:
        out |= {"probs_per_stage": summary["probs_per_stage"],
                "influence_cost_vs_epoch": summary["influence_cost_vs_epoch"],
                "pretrain_sec_per_epoch": summary["sec_per_epoch"]}
    atomic_write_json(_out(cfg) / "metrics.json", out)
    return out
