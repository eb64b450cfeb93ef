"""UTGRec tasks: `utgrec.pretrain` (the tokenizer on the source domain(s), `method.source`) ->
`utgrec.adapt` (on the target, `data`; E frozen when a pre-trained tokenizer exists, else trained
from scratch) -> `utgrec.codes` (codes for every target item, collisions resolved, `codes.json`) ->
`utgrec.rec_pretrain` (the recommender `model` pre-trained on the source domains' sequences, their
items coded by the pre-trained tokenizer) -> `utgrec.pipeline` (all of them, then the recommender on
the target codes, initialised from `rec_pretrain`, through the core train body, `item_tokenizer=file`). Each tokenizer stage is a `rucai.runtime.stages.Stage`: its own
folder, `done.json`, `checkpoints/last.ckpt` every epoch (`ckpt_path=last` resumes it, the
quantiser's warm-up counter included); a finished stage is reused."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from rucai.errors import UserError
from rucai.registry import task

log = logging.getLogger(__name__)


def _settings(cfg: DictConfig) -> DictConfig:
    m = cfg.get("method")
    if m is None or "tokenizer" not in m or "adapt" not in m:
        raise UserError("the utgrec tasks need method=utgrec (use an experiment=utgrec/... overlay)")
    if m.tokenizer.backbone == "mllm" and not m.tokenizer.allow_cpu:
        import torch

        from rucai.runtime import hardware

        hardware.check(cfg.hardware)  # a GPU profile without GPUs: its own one line first
        if not torch.cuda.is_available():
            raise UserError(f"experiment {cfg.experiment_name} needs a CUDA GPU (the Qwen2-VL tokenizer); "
                            f"on a CPU use experiment=utgrec/office_cpu (the text-only path)")
    return m


def _stage(cfg: DictConfig, name: str):
    from rucai.runtime.stages import Stage

    m = _settings(cfg)
    d = m.codes_dir if name == "codes" else m[name].dir
    return Stage(cfg, name, dir=d)


TEXT_ONLY_KEYS = ("head_layers", "head_heads", "train_word_embeddings")


def _tokenizer_kwargs(m: DictConfig) -> dict[str, Any]:
    from rucai.utgrec.module import TOKENIZER_KEYS

    t = m.tokenizer
    kw = {k: t[k] for k in TOKENIZER_KEYS}
    if t.backbone == "mllm":
        kw = {k: v for k, v in kw.items() if k not in TEXT_ONLY_KEYS} | {"gradient_checkpointing": t.gradient_checkpointing}
        if t.image_branch:
            kw |= {k: t[k] for k in ("image_branch", "vae_path", "diffloss_width", "diffloss_depth",
                                     "diffusion_batch_mul")}
    elif t.image_branch:
        raise UserError("method.tokenizer.image_branch=true needs backbone=mllm (the text path reads no images)")
    return kw


def merge_domains(datas: list) -> Any:
    """One SequenceData from several domains: item ids offset per domain (domain d's item i becomes
    i + the item counts before it), sequences and item text kept; no item is shared across domains."""
    from rucai.data.sequential import SequenceData

    seqs, text, off = [], {}, 0
    for d in datas:
        seqs += [[i + off for i in s] for s in d.sequences]
        text |= {i + off: t for i, t in d.item_text.items()}
        off += d.num_items
    return SequenceData(name="+".join(d.name for d in datas), sequences=seqs, num_items=off, item_text=text)


def _sequence_data(data_conf: Any):
    from rucai.utgrec.data import load_sequence_data

    conf = OmegaConf.to_container(data_conf, resolve=True) if OmegaConf.is_config(data_conf) else data_conf
    if isinstance(conf, list):
        if not conf:
            raise UserError("method.source is an empty list; give one or more data configs, or null")
        return merge_domains([load_sequence_data(c) for c in conf])
    return load_sequence_data(conf)


class _MLLMData:
    """The MLLM path's batches (rucai.utgrec.mllm): prompt ids ending in the code tokens, masked texts."""

    def __init__(self, cfg: DictConfig, sd: Any, fields: Any, items: str):
        from rucai.utgrec.data import item_texts
        from rucai.utgrec.mllm import MLLMItemDataset, load_mllm

        t = _settings(cfg).tokenizer
        self.llm, self.tokenizer, ids = load_mllm(t.llm, cfg.hardware)
        texts = [""] + item_texts(sd, fields)
        images, image_processor = None, None
        if t.image_branch:
            from rucai.runtime import load_image_processor
            from rucai.utgrec.mllm import item_image_files

            images = item_image_files(sd, t.image_dir)
            image_processor = load_image_processor(t.llm)
        self.dataset = MLLMItemDataset(texts, sd.sequences, self.tokenizer, ids["code_token_ids"], items=items,
                                       seed=int(cfg.seed), mlm_probability=t.mlm_probability, max_text_len=t.max_tokens,
                                       images=images, image_processor=image_processor, image_size=t.image_size,
                                       flip=items == "train")
        self.batch_size, self.seed, self.num_items = int(t.batch_size), int(cfg.seed), sd.num_items

    def _loader(self, shuffle: bool):
        from functools import partial

        from rucai.data.resumable import ResumableLoader
        from rucai.utgrec.data import EpochShuffleSampler
        from rucai.utgrec.mllm import collate_mllm

        return ResumableLoader(self.dataset, batch_size=self.batch_size,
                               sampler=EpochShuffleSampler(len(self.dataset), self.seed, shuffle),
                               collate_fn=partial(collate_mllm, pad_token_id=int(self.tokenizer.pad_token_id)))

    def train_dataloader(self):
        return self._loader(True)

    def val_dataloader(self):
        return self._loader(False)


def _data(cfg: DictConfig, data_conf: Any, fields: Any, items: str):
    from rucai.utgrec.data import UTGTokenizerData

    t = _settings(cfg).tokenizer
    sd = _sequence_data(data_conf)
    if t.backbone == "mllm":
        return _MLLMData(cfg, sd, fields, items)
    if t.backbone != "text":
        raise UserError(f"method.tokenizer.backbone={t.backbone!r}; use text (CPU) or mllm (Qwen2-VL, GPUs)")
    dm = UTGTokenizerData(data=sd, batch_size=t.batch_size, max_tokens=t.max_tokens, encoder=t.encoder,
                          cache_dir=t.cache_dir, seed=int(cfg.seed), fields=fields, items=items,
                          mlm_probability=t.mlm_probability, encode_batch_size=t.encode_batch_size)
    dm.setup()
    dm.num_items = dm.states.num_items
    return dm


def _module(cfg: DictConfig, dm, s: DictConfig):
    import torch

    from rucai.utgrec.module import UTGTokenizerModule

    m = _settings(cfg)
    common = dict(lr=s.lr, weight_decay=s.weight_decay, warmup_ratio=s.warmup_ratio,
                  vq_warmup_steps=m.tokenizer.vq_warmup_steps, **_tokenizer_kwargs(m))
    if m.tokenizer.backbone == "mllm":
        return UTGTokenizerModule(backbone="mllm", llm=dm.llm, **common)
    return UTGTokenizerModule(torch.from_numpy(dm.states.word_embeddings), state_dim=dm.states.dim, **common)


def _fit(cfg: DictConfig, name: str, data_conf: Any, fields: Any, init: Path | None) -> dict[str, Any]:
    import time

    import torch

    from rucai import runtime
    from rucai.utils.io import atomic_writer

    stage = _stage(cfg, name)

    def work(st) -> dict[str, Any]:
        s = _settings(cfg)[name]
        dm = _data(cfg, data_conf, fields, items="train")
        module = _module(cfg, dm, s)
        if init is not None:  # adaptation: the pre-trained tokenizer, E frozen, no warm-up (finetune.sh)
            module.tok.load_state_dict(torch.load(init, map_location="cpu", weights_only=True))
            module.tok.start_adaptation()
        trainer = runtime.trainer(cfg, st.dir, monitor=False, validate=False, max_epochs=int(s.epochs),
                                  gradient_clip_val=float(s.gradient_clip))
        t0 = time.perf_counter()
        trainer.fit(module, train_dataloaders=dm.train_dataloader(), ckpt_path=st.resume_checkpoint())
        if trainer.interrupted:
            raise KeyboardInterrupt(f"stage {name} interrupted; resume with ckpt_path=last")
        with atomic_writer(st.dir / "tokenizer.pt", "wb") as f:
            torch.save(module.tok.state_dict(), f)
        logged = {k.removeprefix("train/"): float(v) for k, v in trainer.callback_metrics.items()
                  if k.startswith("train/")}
        return {"tokenizer": str(st.dir / "tokenizer.pt"), "epochs": trainer.current_epoch, "items": len(dm.dataset),
                "init": str(init) if init else None, "seconds": round(time.perf_counter() - t0, 1),
                "last_epoch_losses": logged}

    return stage.run(work)


@task("utgrec.pretrain")
def pretrain(cfg: DictConfig) -> dict[str, Any]:
    m = _settings(cfg)
    if m.source is None:
        raise UserError("method.source is null: nothing to pre-train on; set it (e.g. experiment=utgrec/office_cpu) "
                        "or run task=utgrec.adapt alone")
    return _fit(cfg, "pretrain", m.source, m.source_fields, None)


@task("utgrec.adapt")
def adapt(cfg: DictConfig) -> dict[str, Any]:
    m = _settings(cfg)
    init = Path(pretrain(cfg)["tokenizer"]) if m.source is not None else None
    return _fit(cfg, "adapt", cfg.data, m.target_fields, init)


def _write_codes(cfg: DictConfig, out_dir: Path, tok_path: Path, data_conf: Any, fields: Any) -> dict[str, Any]:
    """Codes of every item of `data_conf` from the tokenizer at `tok_path`, collisions resolved
    (next-nearest leaf entries, then a random tail); `<out_dir>/codes.json` = {item: [c1, c2, c3]}."""
    import numpy as np
    import torch

    from rucai.utgrec.collisions import collision_rate, resolve_collisions
    from rucai.utils.io import atomic_write_json

    m = _settings(cfg)
    dm = _data(cfg, data_conf, fields, items="all")
    module = _module(cfg, dm, m.adapt)
    module.tok.load_state_dict(torch.load(tok_path, map_location="cpu", weights_only=True))
    n = dm.num_items
    codes = np.zeros((n + 1, module.tok.code_num), dtype=np.int64)
    dist = np.zeros((n + 1, m.tokenizer.leaf_codes), dtype=np.float32)
    dev = torch.device("cuda" if m.tokenizer.backbone == "mllm" and torch.cuda.is_available() else "cpu")
    module.to(dev)
    for batch in dm.val_dataloader():
        enc = module.tok.encode({k: v.to(dev) if torch.is_tensor(v) else v for k, v in batch.items()})
        items = batch["item"].numpy()
        codes[items] = enc["codes"].cpu().numpy()
        dist[items] = enc["leaf_distances"].float().cpu().numpy()
    before = collision_rate(codes[1:])
    fixed = resolve_collisions(codes[1:], dist[1:], seed=int(cfg.seed), first_codes=m.tokenizer.root_codes)
    atomic_write_json(out_dir / "codes.json", {str(i + 1): [int(c) for c in row] for i, row in enumerate(fixed)})
    used = [len(set(fixed[:, lv].tolist())) for lv in range(fixed.shape[1])]
    return {"codes": str(out_dir / "codes.json"), "items": n, "collision_rate_before": before,
            "collision_rate_after": collision_rate(fixed), "codes_used_per_level": used,
            "changed_by_resolution": int((fixed != codes[1:]).any(1).sum())}


@task("utgrec.codes")
def codes(cfg: DictConfig) -> dict[str, Any]:
    """Codes for every target item from the adapted tokenizer (`codes/codes.json`)."""
    tok_path = Path(adapt(cfg)["tokenizer"])
    m = _settings(cfg)
    return _stage(cfg, "codes").run(lambda st: _write_codes(cfg, st.dir, tok_path, cfg.data, m.target_fields))


def _given_sequences(data: Any, **kw: Any):
    """A SeqRecDataModule over an already loaded SequenceData (the merged source domains)."""
    from rucai.data.sequential import SeqRecDataModule

    class GivenSequences(SeqRecDataModule):
        def load(self):
            return data

    return GivenSequences(**kw)


@task("utgrec.rec_pretrain")
def rec_pretrain(cfg: DictConfig) -> dict[str, Any]:
    """The recommender pre-trained on the source domains' code sequences (the paper's protocol): codes
    of every source item from the PRE-TRAINED tokenizer, then `model` (the T5) trained on the source
    users' sequences; its weights (`t5.pt`) initialise the target recommender. The token layout is
    the same in every domain, so the whole T5 transfers."""
    m = _settings(cfg)
    if m.source is None:
        raise UserError("method.source is null: no source sequences to pre-train the recommender on")
    tok_path = Path(pretrain(cfg)["tokenizer"])

    def work(st) -> dict[str, Any]:
        import time

        import torch
        from hydra.utils import instantiate

        from rucai import runtime
        from rucai.rec.tokenization import CodesFile
        from rucai.utils.io import atomic_writer

        c = _write_codes(cfg, st.dir, tok_path, m.source, m.source_fields)
        sd = _sequence_data(m.source)
        keep = ("max_len", "batch_size", "eval_batch_size", "num_workers", "length_grouping")
        dm = _given_sequences(sd, **{k: cfg.data[k] for k in keep if k in cfg.data})
        dm.setup("fit")
        s = m.rec_pretrain
        model = instantiate(cfg.model, _convert_="all", num_items=sd.num_items, max_len=dm.max_len,
                            item_codes=CodesFile(c["codes"])(sd), lr=float(s.lr))
        trainer = runtime.trainer(cfg, st.dir, monitor=False, validate=False, max_epochs=int(s.epochs),
                                  gradient_clip_val=float(s.gradient_clip))
        t0 = time.perf_counter()
        trainer.fit(model, train_dataloaders=dm.train_dataloader(), ckpt_path=st.resume_checkpoint())
        if trainer.interrupted:
            raise KeyboardInterrupt("stage rec_pretrain interrupted; resume with ckpt_path=last")
        with atomic_writer(st.dir / "t5.pt", "wb") as f:
            torch.save(model.t5.state_dict(), f)
        return {"t5": str(st.dir / "t5.pt"), "source_items": sd.num_items, "epochs": trainer.current_epoch,
                "seconds": round(time.perf_counter() - t0, 1), "source_codes": c}

    return _stage(cfg, "rec_pretrain").run(work)


@task("utgrec.pipeline")
def pipeline(cfg: DictConfig) -> dict[str, Any]:
    """Tokenizer stages, then the recommender (`model`, e.g. TIGER with the shared leaf layout) on
    the codes, trained and tested by the core train body."""
    from rucai.tasks import fit_and_test

    c = codes(cfg)
    m = _settings(cfg)
    init = None
    if m.source is not None and m.rec_pretrain.epochs > 0:
        t5 = rec_pretrain(cfg)["t5"]

        def init(model) -> None:  # the target T5 starts from the source-pre-trained one
            import torch

            model.t5.load_state_dict(torch.load(t5, map_location="cpu", weights_only=True))

    with open_dict(cfg):
        cfg.item_tokenizer = OmegaConf.create({"_target_": "rucai.rec.tokenization.CodesFile", "path": c["codes"]})
    return ({"tokenizer_codes": c["codes"], "collision_rate_before": c["collision_rate_before"],
             "recommender_pretrained": init is not None} | fit_and_test(cfg, model_init=init))
