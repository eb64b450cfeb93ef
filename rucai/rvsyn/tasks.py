"""RV-Syn tasks.

  rvsyn.synthesize  the stages in order (`rucai.rvsyn.pipeline`): decompose -> library -> compose ->
                    execute -> backtranslate -> verify -> export; each resumable, reused once done.
                    Writes `summary.md` (every stage's yield) next to the stage folders.
  rvsyn.decompose   the decompose stage alone;  rvsyn.library  decompose + library
  rvsyn.sft         GPU: the synthesised dataset (`method.sft.dataset`, or synthesised in this run)
                    -> full fine-tuning of `method.sft.model` (the project's Lightning SFT module,
                    hardware profiles incl. DeepSpeed ZeRO-3, resume from `last.ckpt`) -> `math_eval`
                    of the fine-tuned model on the `data` benchmark (MATH-500) in `<run dir>/eval`.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rucai.errors import UserError
from rucai.registry import task

log = logging.getLogger(__name__)


def _settings(cfg: DictConfig) -> DictConfig:
    from rucai.rvsyn.config import BACKTRANSLATORS, DECOMPOSERS

    m = cfg.get("method")
    if m is None or "decompose" not in m or "compose" not in m or "backtranslate" not in m:
        raise UserError("the rvsyn tasks need method=rvsyn (use an experiment=rvsyn/... overlay)")
    bad = [d for d in m.decompose.decomposers if d not in DECOMPOSERS]
    if bad or not m.decompose.decomposers:
        raise UserError(f"method.decompose.decomposers={list(m.decompose.decomposers)}; choose from {', '.join(DECOMPOSERS)}")
    if m.backtranslate.kind not in BACKTRANSLATORS:
        raise UserError(f"method.backtranslate.kind={m.backtranslate.kind}; choose from {', '.join(BACKTRANSLATORS)}")
    return m


def _preflight(cfg: DictConfig) -> None:
    from rucai.runtime import hardware

    hardware.check(cfg.hardware)
    hardware.apply_threads(cfg.hardware)
    m = _settings(cfg)
    if m.needs_gpu:
        hardware.require_cuda(cfg.experiment_name, "full fine-tuning of an 8B model, then MATH-500 generation",
                              "rvsyn/gsm8k_cpu (synthesis only)")
    from rucai.llm import check as check_llm

    check_llm(cfg.get("llm"), cfg.hardware)


def _metrics(results: dict[str, dict[str, Any]], stats_root: Path) -> dict[str, Any]:
    """Flat metrics: every stage's result, plus the yields recorded in its stats.json."""
    out: dict[str, Any] = {}
    for stage, res in results.items():
        for k, v in res.items():
            if isinstance(v, dict):
                out |= {f"{stage}/{k}/{kk}": vv for kk, vv in v.items() if isinstance(vv, int | float | str)}
            elif isinstance(v, int | float | bool):
                out[f"{stage}/{k}"] = v
    for stage in ("compose", "execute", "backtranslate", "verify"):
        p = stats_root / stage / "stats.json"
        if p.is_file():
            s = json.loads(p.read_text())
            if "yield" in s:
                out[f"{stage}/yield"] = s["yield"]
    return out


def _summary(ctx: Any) -> str:
    """summary.md: the yield of every stage, from the stats files."""
    root = ctx.root

    def stats(stage: str) -> dict[str, Any]:
        p = root / stage / "stats.json"
        return json.loads(p.read_text()) if p.is_file() else {}

    lines = [f"# RV-Syn synthesis: {ctx.cfg.experiment_name}", "", "| stage | in | out | yield | dropped (top reasons) |",
             "|---|---|---|---|---|"]

    def top(d: dict[str, Any]) -> str:
        return ", ".join(f"{k} {v}" for k, v in list(d.items())[:4]) or "-"

    for name, s in stats("decompose").items():
        lines.append(f"| decompose ({name}) | {s['seeds']} seeds | {s['kept']} graphs | {100 * s['yield']:.1f}% | "
                     f"{top(s['dropped'])} |")
    lib = stats("library")
    if lib:
        mm = lib["meaning_merge"]
        lines.append(f"| library | {lib['functions_before_merge']} functions | {lib['after_meaning_merge']} | "
                     f"{100 * lib['after_meaning_merge'] / max(lib['functions_before_merge'], 1):.1f}% | structure merge "
                     f"-{lib['structure_merged']}, meaning merge -{lib['meaning_merged']} "
                     f"({'on' if mm['used'] else 'off'}) |")
    for stage, a, b in (("compose", "candidates", "composed"), ("execute", "executed", "valid"),
                        ("backtranslate", "graphs", "problems"), ("verify", "problems", "verified")):
        s = stats(stage)
        if s:
            lines.append(f"| {stage} | {s[a]} | {s[b]} | {100 * s['yield']:.1f}% | {top(s.get('dropped', {}))} |")
    ex = stats("export")
    if ex:
        lines += ["", f"Exported {ex['items']} items. Depth (mean) seeds {ex['seeds']['depth'].get('mean')} vs "
                      f"synthesised {ex['synthesized']['depth'].get('mean')}; operations (mean) seeds "
                      f"{ex['seeds']['ops'].get('mean')} vs synthesised {ex['synthesized']['ops'].get('mean')}."]
    return "\n".join(lines) + "\n"


def _run(cfg: DictConfig, until: str) -> dict[str, Any]:
    from rucai.rvsyn.pipeline import Context, synthesize
    from rucai.utils.io import atomic_write_text

    _preflight(cfg)
    ctx = Context(cfg)
    results = synthesize(ctx, until)
    md = _summary(ctx)
    atomic_write_text(Path(cfg.paths.output_dir) / "summary.md", md)
    print(md)
    return _metrics(results, ctx.root)


@task("rvsyn.synthesize")
def synthesize(cfg: DictConfig) -> dict[str, Any]:
    return _run(cfg, "export")


@task("rvsyn.decompose")
def decompose(cfg: DictConfig) -> dict[str, Any]:
    return _run(cfg, "decompose")


@task("rvsyn.library")
def library(cfg: DictConfig) -> dict[str, Any]:
    return _run(cfg, "library")


# ----------------------------------------------------------------------------------------------- sft

# a chat template for base models that have none: the SFT prompt and the evaluation prompt render alike
PLAIN_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}Question: {{ m['content'] }}\n"
                  "Answer: {% elif m['role'] == 'assistant' %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}")


def sft_examples(items: list[dict[str, Any]], instruction: str) -> list[tuple[list[dict[str, str]], str]]:
    """(chat messages, target) per exported item: the instruction + problem -> the step-by-step solution."""
    return [([{"role": "user", "content": f"{instruction}{it['problem']}"}], it["solution"]) for it in items]


@task("rvsyn.sft")
def sft(cfg: DictConfig) -> dict[str, Any]:
    from rucai.runtime.stages import Stage
    from rucai.rvsyn.pipeline import Context, read_rows, synthesize

    _preflight(cfg)
    m = _settings(cfg)
    f = m.sft
    if f.dataset:
        data = Path(str(f.dataset))
        if not data.is_file():
            raise UserError(f"method.sft.dataset={data} not found; run experiment=rvsyn/gsm8k_cpu first (its "
                            f"export/sft.jsonl) or set method.sft.dataset=null to synthesise in this run")
    else:
        ctx = Context(cfg)
        data = Path(synthesize(ctx, "export")["export"]["path"])
    items = read_rows(data)
    if f.max_examples:
        items = items[: int(f.max_examples)]
    if not items:
        raise UserError(f"{data} has no items to fine-tune on")

    def train(st: Stage) -> dict[str, Any]:
        import time

        from rucai import runtime
        from rucai.data.resumable import ResumableLoader
        from rucai.llm.sft import ChatSFT, collate, encode_example

        tok = runtime.load_tokenizer(str(f.model))
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        if not getattr(tok, "chat_template", None):
            tok.chat_template = PLAIN_TEMPLATE
        rows = [encode_example(tok, msgs, ans, int(f.max_length)) for msgs, ans in sft_examples(items, m.export.instruction)]
        loader = ResumableLoader(rows, batch_size=int(f.batch_size), shuffle=True, collate_fn=lambda b: collate(b, tok.pad_token_id))
        runtime.seed(cfg)
        model = runtime.load_causal_lm(str(f.model), cfg.hardware, dtype=str(f.dtype))
        # the LR schedule counts optimizer steps: batches / gradient accumulation, per epoch
        accum = int(OmegaConf.select(cfg, "trainer.accumulate_grad_batches") or 1)
        total = math.ceil(len(loader) / accum) * int(f.epochs)
        module = ChatSFT(model, float(f.lr), min(int(f.warmup_steps), max(total // 10, 1)), total,
                              float(f.min_lr_ratio), bool(f.lora), int(f.lora_r))
        trainer = runtime.trainer(cfg, st.dir, monitor=False, validate=False, max_epochs=int(f.epochs))
        t0 = time.perf_counter()
        trainer.fit(module, train_dataloaders=loader, ckpt_path=st.resume_checkpoint())
        if trainer.interrupted:
            raise KeyboardInterrupt("stage sft interrupted; resume with ckpt_path=last")
        out = save_hf(trainer, module, tok, st.dir / "model")
        return {"model": str(out), "examples": len(rows), "optimizer_steps": total, "dataset": str(data),
                "seconds": round(time.perf_counter() - t0, 1)}

    trained = Stage(cfg, "sft").run(train)
    from rucai.runtime.stages import is_rank_zero

    if not is_rank_zero():  # the other training ranks are done; rank zero evaluates
        return {"sft/examples": trained["examples"]}
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the trainer's memory goes back before the evaluation engine starts
    # evaluation: the project's math_eval with the fine-tuned model, in <run dir>/eval
    from rucai.eval.tasks import math_eval

    ev = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    ev.paths.output_dir = str(Path(cfg.paths.output_dir) / "eval")
    ev.llm.model = trained["model"]
    Path(ev.paths.output_dir).mkdir(parents=True, exist_ok=True)
    metrics = math_eval(ev)
    return {"sft/examples": trained["examples"], "sft/optimizer_steps": trained["optimizer_steps"]} | metrics


def save_hf(trainer: Any, module: Any, tok: Any, out: Path) -> Path:
    """The fine-tuned model as a plain Hugging Face folder (LoRA merged), written by rank zero. Under
    DeepSpeed ZeRO-3 every rank holds a shard of each parameter: they are gathered first."""
    import contextlib
    import shutil

    ctx: Any = contextlib.nullcontext()
    if getattr(trainer.strategy, "zero_stage_3", False):
        import deepspeed

        ctx = deepspeed.zero.GatheredParameters(list(module.model.parameters()), modifier_rank=None)
    tmp = out.with_name(out.name + ".tmp")
    with ctx:
        if trainer.is_global_zero:
            shutil.rmtree(tmp, ignore_errors=True)
            module.merged().save_pretrained(tmp)
            tok.save_pretrained(tmp)
            shutil.rmtree(out, ignore_errors=True)
            tmp.rename(out)
    trainer.strategy.barrier("rvsyn.save_hf")
    return out
