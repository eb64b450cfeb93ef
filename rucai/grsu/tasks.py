"""GRSU tasks.

  grsu.evaluate       every evaluation turn: the CRS alone (depth 0) and the search guided by the
                      `method.search.reward` (simulator | random), candidates ranked by mean, sum and
                      vote; Recall/NDCG/MRR@{1,5,10,20,50} per turn (`metrics.py`); cost per turn.
                      One JSON line per turn in `turns.jsonl`, appended as each finishes: a rerun
                      (ckpt_path=last or the same run dir) skips the turns already there
  grsu.simulator_auc  the simulator's Yes-probability for each label vs a random catalogue item on
                      held-out turns (the evaluation half): ROC AUC
  grsu.sft            simulator instruction tuning on the simulator-training half (`sft.py`), a
                      resumable stage; its model folder goes to `method.simulator_dir`

Data: ReDial turns (`data.py`), dialogs split by `method.split_seed` into a simulator-training half
and an evaluation half (`data.split_dialogs`).
"""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rucai.errors import UserError, check_min
from rucai.registry import task

log = logging.getLogger(__name__)


def _settings(cfg: DictConfig) -> DictConfig:
    m = cfg.get("method")
    if m is None or "search" not in m or "crs" not in m:
        raise UserError("the grsu tasks need method=grsu (use an experiment=grsu/... overlay)")
    if m.search.reward not in ("simulator", "random"):
        raise UserError(f"method.search.reward={m.search.reward!r}; use simulator or random")
    if m.crs.kind not in ("llm", "retrieval"):
        raise UserError(f"method.crs.kind={m.crs.kind!r}; use llm or retrieval")
    check_min(m.search, "method.search", beams=1, depth=0, expand=1, root=1, critique_tokens=1)
    check_min(m.crs, "method.crs", k=1, retries=1, pool=1)
    return m


def _preflight(cfg: DictConfig) -> None:
    """GPU settings on a machine without one stop here, in one line, before any data is read."""
    from rucai.runtime import hardware

    hardware.check(cfg.hardware)
    m = _settings(cfg)
    backends = [OmegaConf.select(cfg, "llm.backend"), OmegaConf.select(m, "crs.llm.backend") if m.crs.kind == "llm" else None]
    if "vllm" in backends and not OmegaConf.select(cfg, "llm.allow_cpu"):
        import torch

        if not torch.cuda.is_available():
            raise UserError(f"experiment {cfg.experiment_name} needs a CUDA GPU (vLLM engines for the CRS and the "
                            f"simulator); on a CPU use experiment=grsu/redial_cpu")


def _data(cfg: DictConfig, max_turns: Any = None) -> tuple[list[Any], list[Any], dict[int, str]]:
    """(simulator-training turns, the first `max_turns` evaluation turns (null: all), catalogue)."""
    from rucai.grsu.data import load_catalogue, load_redial, split_dialogs

    m = _settings(cfg)
    turns = load_redial(m.data_dir, only_new=bool(m.only_new))
    train, evaluation = split_dialogs(turns, seed=int(m.split_seed))
    if max_turns is not None:
        evaluation = evaluation[: int(max_turns)]
    return train, evaluation, load_catalogue(m.data_dir)


def _simulator_llm(cfg: DictConfig) -> Any:
    from rucai import llm

    m = _settings(cfg)
    over = {"model": str(m.simulator_dir)} if m.simulator_dir else {}
    if m.simulator_dir and not Path(str(m.simulator_dir)).is_dir():
        raise UserError(f"method.simulator_dir={m.simulator_dir} is not a folder; run task=grsu.sft first")
    return llm.build(cfg.llm, hardware=cfg.hardware, **over)


def _crs(cfg: DictConfig, catalogue: dict[int, str]) -> Any:
    from rucai.grsu.crs import LLMCRS, RetrievalCRS

    c = _settings(cfg).crs
    if c.kind == "retrieval":
        return RetrievalCRS(catalogue, k=int(c.k), pool=int(c.pool), temperature=float(c.retrieval_temperature),
                            encoder=c.encoder)
    if c.llm is None:
        raise UserError("method.crs.kind=llm needs method.crs.llm (an llm config, e.g. {backend: vllm, model: ...}); "
                        "or method.crs.kind=retrieval")
    from rucai import llm

    return LLMCRS(llm.build(c.llm, hardware=cfg.hardware), catalogue, k=int(c.k), retries=int(c.retries),
                  temperature=float(c.temperature), max_tokens=int(c.max_tokens))


def _done_turns(path: Path) -> dict[str, dict[str, Any]]:
    """Turn records already written; a torn last line (a kill mid-write) is cut off the file so the
    next record starts on a line of its own."""
    from rucai.utils.io import atomic_write_text

    out: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return out
    text = path.read_text(encoding="utf-8")
    good = []
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        out[rec["turn"]] = rec
        good.append(line)
    if text and (not text.endswith("\n") or len(good) != len(text.splitlines())):
        atomic_write_text(path, "".join(ln + "\n" for ln in good))
    return out


def _append(path: Path, rec: dict[str, Any]) -> None:
    import os

    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(rec) + "\n")
        f.flush()
        os.fsync(f.fileno())


@task("grsu.evaluate")
def evaluate(cfg: DictConfig) -> dict[str, Any]:
    from rucai.grsu.metrics import mean_metrics, rank_metrics
    from rucai.grsu.search import POOLING, rank_candidates, search
    from rucai.grsu.simulator import RandomScorer, Simulator

    m = _settings(cfg)
    s = m.search
    _preflight(cfg)
    _, turns, catalogue = _data(cfg, m.max_turns)
    out = Path(cfg.paths.output_dir)
    path = out / "turns.jsonl"
    done = _done_turns(path)
    if done and cfg.get("ckpt_path") is None:
        log.info("%d turns already evaluated in %s: continuing", len(done), path)
    crs = _crs(cfg, catalogue)
    sim = None
    if s.depth > 0 or s.reward == "simulator":
        sim = Simulator(_simulator_llm(cfg), catalogue, critique_tokens=int(s.critique_tokens),
                        critique_temperature=float(s.critique_temperature), seed=int(cfg.seed))
    scorer = sim if s.reward == "simulator" else RandomScorer(seed=int(cfg.seed))
    for n, t in enumerate(turns):
        if t.key in done:
            continue
        t0 = time.perf_counter()
        calls0 = (getattr(scorer, "score_calls", 0), getattr(sim, "critique_calls", 0), crs.calls)
        exclude = set(t.mentioned) if m.crs.exclude_mentioned else set()

        def propose(dialogue, rounds, k, rng, _ex=exclude):
            return crs.propose(dialogue, rounds, k, rng, exclude=_ex) if hasattr(crs, "ranked") else \
                crs.propose(dialogue, rounds, k, rng)

        if hasattr(crs, "ranked"):  # the retrieval CRS alone ranks 50 candidates
            alone = [i for i, _ in crs.ranked(crs.query(t.dialogue, []), exclude, 50)]
        else:
            first = propose(t.dialogue, [], 1, random.Random(int(cfg.seed)))
            alone = first[0] if first else []
        rec: dict[str, Any] = {"turn": t.key, "labels": t.labels, "crs": alone}
        if s.depth > 0:
            res = search(t.key, t.dialogue, propose, scorer.score, sim.critique, beams=int(s.beams), depth=int(s.depth),
                         expand=int(s.expand), root=int(s.root), seed=int(cfg.seed) * 1000003 + n)
            for p in POOLING:
                rec[f"search_{p}"] = rank_candidates(res.nodes, t.key, t.dialogue, scorer.score, p)[:50]
            rec["nodes"] = len(res.nodes)
        calls1 = (getattr(scorer, "score_calls", 0), getattr(sim, "critique_calls", 0), crs.calls)
        rec |= {"score_calls": calls1[0] - calls0[0], "critique_calls": calls1[1] - calls0[1],
                "crs_calls": calls1[2] - calls0[2], "seconds": round(time.perf_counter() - t0, 3)}
        _append(path, rec)
        done[t.key] = rec
        log.info("turn %d/%d %s: %.1fs, %d simulator scores", n + 1, len(turns), t.key, rec["seconds"], rec["score_calls"])
    recs = [done[t.key] for t in turns]
    metrics: dict[str, Any] = {"turns": len(recs), "labels": sum(len(r["labels"]) for r in recs),
                               "reward": s.reward, "crs_kind": m.crs.kind}
    for method in ["crs"] + ([f"search_{p}" for p in POOLING] if s.depth > 0 else []):
        agg = mean_metrics([rank_metrics(r[method], r["labels"]) for r in recs])
        metrics |= {f"{method}/{k}": v for k, v in agg.items()}
    n = max(len(recs), 1)
    metrics |= {f"cost/{k}_per_turn": sum(r[k] for r in recs) / n
                for k in ("score_calls", "critique_calls", "crs_calls", "seconds")}
    return metrics


@task("grsu.simulator_auc")
def simulator_auc(cfg: DictConfig) -> dict[str, Any]:
    """AUC of the simulator's score: each label of `method.auc_turns` evaluation turns (positive) vs
    one random catalogue item that is no label of the turn (negative)."""
    from rucai.eval.ranking import auc
    from rucai.grsu.simulator import Simulator

    m = _settings(cfg)
    _preflight(cfg)
    _, turns, catalogue = _data(cfg, m.auc_turns)
    sim = Simulator(_simulator_llm(cfg), catalogue)
    rng = random.Random(int(cfg.seed))
    ids = list(catalogue)
    pos, neg = [], []
    t0 = time.perf_counter()
    for t in turns:
        negs = []
        for _ in t.labels:
            j = rng.choice(ids)
            while j in t.labels:
                j = rng.choice(ids)
            negs.append(j)
        scores = sim.score(t.key, t.dialogue, list(t.labels) + negs)
        pos += scores[: len(t.labels)]
        neg += scores[len(t.labels):]
    return {"auc": auc(pos, neg), "positives": len(pos), "negatives": len(neg), "turns": len(turns),
            "mean_score_pos": sum(pos) / len(pos), "mean_score_neg": sum(neg) / len(neg),
            "seconds": round(time.perf_counter() - t0, 1), "simulator": str(m.simulator_dir or cfg.llm.get("model"))}


@task("grsu.sft")
def sft(cfg: DictConfig) -> dict[str, Any]:
    """Simulator instruction tuning (a stage: `<run dir>/sft/`, resumable, reused once done)."""
    from rucai.runtime.stages import Stage

    m = _settings(cfg)
    _preflight(cfg)

    def work(st) -> dict[str, Any]:
        import shutil

        from rucai import runtime
        from rucai.data.resumable import ResumableLoader
        from rucai.grsu.sft import scoring_examples
        from rucai.llm.sft import ChatSFT, collate, encode_example

        train, _, catalogue = _data(cfg)
        path = _hf_folder(cfg)
        tok = runtime.load_tokenizer(path)
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        f = m.sft
        ex = scoring_examples(train, catalogue, int(f.negatives_per_positive), int(cfg.seed),
                              int(f.max_examples) if f.max_examples else None)
        rows = [encode_example(tok, msgs, ans, int(f.max_length)) for msgs, ans in ex]
        loader = ResumableLoader(rows, batch_size=int(f.batch_size), shuffle=True,
                            collate_fn=lambda b: collate(b, tok.pad_token_id))
        runtime.seed(cfg)
        model = runtime.load_causal_lm(path, cfg.hardware, dtype="float32")
        total = len(loader) * int(f.epochs)
        module = ChatSFT(model, float(f.lr), min(int(f.warmup_steps), max(total // 10, 1)) if total < int(f.warmup_steps)
                              else int(f.warmup_steps), total, float(f.min_lr_ratio), bool(f.lora), int(f.lora_r))
        trainer = runtime.trainer(cfg, st.dir, monitor=False, validate=False, max_epochs=int(f.epochs))
        t0 = time.perf_counter()
        trainer.fit(module, train_dataloaders=loader, ckpt_path=st.resume_checkpoint())
        if trainer.interrupted:
            raise KeyboardInterrupt("stage sft interrupted; resume with ckpt_path=last")
        out, tmp = st.dir / "simulator", st.dir / "simulator.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        module.merged().save_pretrained(tmp)
        tok.save_pretrained(tmp)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
        return {"simulator": str(out), "examples": len(rows), "steps": total,
                "seconds": round(time.perf_counter() - t0, 1),
                "yes_share": sum(a == "Yes" for _, a in ex) / max(len(ex), 1)}

    return Stage(cfg, "sft").run(work)


def _hf_folder(cfg: DictConfig) -> str:
    """The simulator's model as a plain HF folder (a GGUF alias such as smollm2-135m-instruct is
    converted once and cached, as the hf backend does)."""
    from rucai.llm import models

    spec = OmegaConf.select(cfg, "llm.model")
    if spec is None:
        raise UserError("grsu.sft needs llm.model (the simulator to fine-tune)")
    path, gguf = models.resolve(str(spec))
    if gguf:
        path = str(models.gguf_to_hf(path, gguf, cache_dir=OmegaConf.select(cfg, "llm.cache_dir")))
    return path
