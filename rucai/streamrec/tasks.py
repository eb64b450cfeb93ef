"""STREAM-Rec tasks, one stage each (`rucai.runtime.stages.Stage`: own folder, `done.json`,
resumable with `ckpt_path=last`, reused once done):

  streamrec.pretrain   stage 1: the T5 on targets extended with similar items (early stopping on
                       validation, tested with the similar-item prefix decoded freely)
  streamrec.annotate   stage 2a: the thinking annotator on the frozen stage-1 T5 (`annotator.pt`)
  streamrec.sft        stage 2b: the T5 from stage 1, fine-tuned on [thinking tokens ; target]
  streamrec.rl         stage 3: GRPO from the SFT policy
  streamrec.pipeline   all of them up to `method.last_phase`; metrics.json has each phase's
                       validation/test metrics under `<phase>/...` and the last phase's at the top

Every phase is trained and tested by the core train body (`rucai.tasks.fit_and_test`) in its own
folder, so each phase's row of the comparison comes from the same run and seed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from rucai.errors import UserError, check_min
from rucai.registry import task

log = logging.getLogger(__name__)


def _settings(cfg: DictConfig) -> DictConfig:
    m = cfg.get("method")
    if m is None or "annotator" not in m or "rl" not in m:
        raise UserError("the streamrec tasks need method=streamrec (use an experiment=streamrec/... overlay)")
    if m.last_phase not in ("pretrain", "sft", "rl"):
        raise UserError(f"method.last_phase={m.last_phase!r}; use pretrain, sft or rl")
    if not cfg.get("item_tokenizer"):
        raise UserError("STREAM-Rec needs semantic IDs: set item_tokenizer (e.g. item_tokenizer=rqvae_authors)")
    check_min(m.pretrain, "method.pretrain", similar_items=0, epochs=1)
    check_min(m.annotator, "method.annotator", steps=1, epochs=1)
    check_min(m.sft, "method.sft", epochs=1, dpo_weight=0)
    check_min(m.rl, "method.rl", epochs=1, group_size=2, rank_negatives=0)
    return m


def _stage(cfg: DictConfig, name: str):
    from rucai.runtime.stages import Stage

    return Stage(cfg, name, dir=_settings(cfg)[name].dir)


def _phase_cfg(cfg: DictConfig, phase: str, out_dir: Path) -> DictConfig:
    """The run's config for one phase: its folder, epochs, lr, patience and batch limit."""
    s = _settings(cfg)[phase]
    c = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    with open_dict(c):
        c.paths.output_dir = str(out_dir)
        c.trainer.max_epochs = int(s.epochs)
        c.model.lr = float(s.lr)
        if c.get("callbacks") and c.callbacks.get("early_stopping"):
            c.callbacks.early_stopping.patience = int(s.patience)
        if s.limit_train_batches is not None and c.trainer.get("limit_train_batches") is None:
            c.trainer.limit_train_batches = s.limit_train_batches
    return c


def _features(cfg: DictConfig, phase: str):
    """`item_features(data)` for the core train body: the phase's model arguments."""
    m = _settings(cfg)

    def features(data: Any) -> dict[str, Any]:
        kw: dict[str, Any] = {"phase": phase, "think_steps": int(m.annotator.steps),
                              "annotator": OmegaConf.to_container(m.annotator, resolve=True),
                              "rl": OmegaConf.to_container(m.rl, resolve=True),
                              "dpo": {"weight": float(m.sft.dpo_weight), "beta": float(m.sft.dpo_beta),
                                      "temperature": float(m.sft.dpo_temperature),
                                      "direct_similar_items": int(m.pretrain.similar_items)}}
        if phase == "pretrain":
            from rucai.streamrec.targets import similar_items

            p = m.pretrain
            kw |= {"similar": similar_items(_item_embeddings(cfg, data), int(p.similar_items)),
                   "similar_order": p.order, "temperature": float(p.temperature)}
        return kw

    return features


def _item_embeddings(cfg: DictConfig, data: Any):
    from rucai.rec.embeddings import encode_items

    p = _settings(cfg).pretrain
    fields = p.fields if p.fields is not None else cfg.item_tokenizer.get("fields") or ("title",)
    return encode_items(data.item_text, p.encoder, tuple(fields), cfg.paths.get("cache_dir"),
                        num_items=data.num_items)


def _fit_phase(cfg: DictConfig, phase: str, init: Any = None) -> dict[str, Any]:
    from rucai.tasks import fit_and_test

    def work(st) -> dict[str, Any]:  # the phase's metrics go into its done.json (and the run's metrics.json)
        res = fit_and_test(_phase_cfg(cfg, phase, st.dir), _features(cfg, phase), init)
        if res.get("status") == "interrupted":
            raise KeyboardInterrupt(f"phase {phase} interrupted; resume with ckpt_path=last")
        if not res.get("test_ckpt"):
            raise UserError(f"phase {phase} has no best checkpoint (test=false?); the next phase starts from it")
        return res

    return _stage(cfg, phase).run(work)


@task("streamrec.pretrain")
def pretrain(cfg: DictConfig) -> dict[str, Any]:
    """Stage 1: targets extended with the similar items' codes, temperature softmax."""
    return _fit_phase(cfg, "pretrain")


@task("streamrec.annotate")
def annotate(cfg: DictConfig) -> dict[str, Any]:
    """Stage 2a: the iterative-inference annotator on the frozen stage-1 T5 (`annotator/annotator.pt`)."""
    ckpt = pretrain(cfg)["test_ckpt"]
    m = _settings(cfg)

    def work(st) -> dict[str, Any]:
        import time

        import torch
        from hydra.utils import instantiate

        from rucai import runtime
        from rucai.rec.tokenization import item_codes
        from rucai.streamrec.annotator import AnnotatorFit
        from rucai.streamrec.model import load_t5_from
        from rucai.utils.io import atomic_writer

        runtime.seed(cfg)
        dm = instantiate(cfg.data, _convert_="all")
        dm.setup("fit")
        extra = (dm.model_kwargs() if hasattr(dm, "model_kwargs") else {}) | _features(cfg, "sft")(dm.data)
        model = instantiate(cfg.model, _convert_="all", item_codes=item_codes(cfg.item_tokenizer, dm.data), **extra)
        load_t5_from(model, ckpt, into=("anchor",))
        fit = AnnotatorFit(model, lr=float(m.annotator.lr))
        trainer = runtime.trainer(cfg, st.dir, monitor=False, validate=False, max_epochs=int(m.annotator.epochs))
        t0 = time.perf_counter()
        trainer.fit(fit, train_dataloaders=dm.train_dataloader(), ckpt_path=st.resume_checkpoint())
        if trainer.interrupted:
            raise KeyboardInterrupt("stage annotator interrupted; resume with ckpt_path=last")
        with atomic_writer(st.dir / "annotator.pt", "wb") as f:
            torch.save(model.annotator.state_dict(), f)
        stats = fit.diagnostics(dm.val_dataloader())
        return {"annotator": str(st.dir / "annotator.pt"), "epochs": trainer.current_epoch,
                "seconds": round(time.perf_counter() - t0, 1), **stats}

    return _stage(cfg, "annotator").run(work)


def _loader(ckpts: dict[str, tuple[str, ...]], annotator: str | None):
    """model_init: T5 weights from checkpoints ({ckpt: (t5 | anchor | ref, ...)}) and the annotator."""

    def init(model) -> None:
        import torch

        from rucai.streamrec.model import load_t5_from

        for ckpt, into in ckpts.items():
            load_t5_from(model, ckpt, into=into)
        if annotator is not None:
            model.annotator.load_state_dict(torch.load(annotator, map_location="cpu", weights_only=True))

    return init


@task("streamrec.sft")
def sft(cfg: DictConfig) -> dict[str, Any]:
    """Stage 2b: [thinking ; target] from the stage-1 T5 (also the annotation's frozen anchor)."""
    base = pretrain(cfg)["test_ckpt"]
    ann = annotate(cfg)["annotator"]
    return _fit_phase(cfg, "sft", _loader({base: ("t5", "anchor")}, ann))


@task("streamrec.rl")
def rl(cfg: DictConfig) -> dict[str, Any]:
    """Stage 3: GRPO from the SFT policy (also the KL reference)."""
    base = pretrain(cfg)["test_ckpt"]
    ann = annotate(cfg)["annotator"]
    policy = sft(cfg)["test_ckpt"]
    into = ("t5", "ref") if float(_settings(cfg).rl.kl_coef) > 0 else ("t5",)
    return _fit_phase(cfg, "rl", _loader({base: ("anchor",), policy: into}, ann))


@task("streamrec.pipeline")
def pipeline(cfg: DictConfig) -> dict[str, Any]:
    """Every phase up to `method.last_phase`; the last phase's metrics on top, each phase's under
    `<phase>/` (the comparison's rows: stage 1 only, stages 1+2, 1+2+3)."""
    m = _settings(cfg)
    run = {"pretrain": pretrain, "sft": sft, "rl": rl}
    order = ["pretrain", "sft", "rl"][: ["pretrain", "sft", "rl"].index(m.last_phase) + 1]
    out: dict[str, Any] = {}
    last: dict[str, Any] = {}
    for phase in order:
        last = run[phase](cfg)
        out |= {f"{phase}/{k}": v for k, v in last.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    if "sft" in order:
        ann = annotate(cfg)
        out |= {f"annotator/{k}": v for k, v in ann.items() if isinstance(v, int | float)}
    return out | {k: v for k, v in last.items() if k.startswith(("test/", "val/", "val_full/"))}
