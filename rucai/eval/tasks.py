"""Evaluation tasks: `math_eval` (sampled generation on math benchmarks, OlymMATH protocol).

Tasks write their artefacts (samples.jsonl, per_problem.csv, summary.md) and return their metrics;
the dispatcher (`rucai.dispatch.run_task`) writes metrics.json."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rucai.registry import task

log = logging.getLogger(__name__)


def _settings(cfg: DictConfig) -> dict[str, Any]:
    ev = OmegaConf.to_container(cfg.eval, resolve=True)
    sampling = OmegaConf.to_container(cfg.llm.sampling, resolve=True)
    out = {"num_samples": int(ev["num_samples"]), "max_problems": ev.get("max_problems"),
           "chunk_size": int(ev.get("chunk_size", 16)), "system_prompt": ev.get("system_prompt"),
           "protocol": ev.get("protocol", "strict"), "sampling": sampling}
    return out


@task("math_eval")
def math_eval(cfg: DictConfig) -> dict[str, Any]:
    from hydra.utils import instantiate

    from rucai.eval.generation import generate_samples, plot_subjects, read_samples, sampling_key, summarize
    from rucai.eval.math import extract_answer, olymmath_extract_boxed, verify
    from rucai.llm import build as build_llm
    from rucai.runtime import hardware
    from rucai.utils.io import atomic_write_text

    hardware.check(cfg.hardware)
    out_dir = Path(cfg.paths.output_dir)
    s = _settings(cfg)
    from rucai.llm import check as check_llm

    check_llm(cfg.llm, cfg.hardware)  # a backend that cannot run here fails before the data loads
    bench = instantiate(cfg.data, _convert_="all")
    problems = bench.load()
    if s["max_problems"]:
        problems = problems[: int(s["max_problems"])]
    by_id = {p.id: p for p in problems}

    def check(response: str, gold: str) -> bool:
        return verify(response, gold, protocol=s["protocol"])

    def extract(response: str) -> str | None:  # the answer the protocol grades (cons@k clusters these)
        return olymmath_extract_boxed(response) if s["protocol"] == "olymmath_lenient" else extract_answer(response)

    def equivalent(a: str, b: str) -> bool:
        return verify(f"\\boxed{{{a}}}", b)

    samples_path = out_dir / "samples.jsonl"
    llm_identity = {k: v for k, v in OmegaConf.to_container(cfg.llm, resolve=True).items() if k != "sampling"}
    key = sampling_key(llm_identity, s["sampling"], s["system_prompt"])
    done = read_samples(samples_path, key)
    todo = [(p, [i for i in range(s["num_samples"]) if (p.id, i) not in done]) for p in problems]
    todo = [(p, missing) for p, missing in todo if missing]
    log.info("%s: %d problems x %d samples; %d already done, %d problems to generate (sampling key %s)",
             bench.name, len(problems), s["num_samples"], len(done), len(todo), key)

    if todo:
        llm = build_llm(cfg.llm, hardware=cfg.hardware)

        def prompt(p: Any) -> list[dict[str, str]]:
            msgs = [{"role": "system", "content": s["system_prompt"]}] if s["system_prompt"] else []
            return msgs + [{"role": "user", "content": p.prompt(bench.instruction)}]

        generate_samples(llm, todo, prompt, s["sampling"], chunk_size=s["chunk_size"], seed=int(cfg.seed),
                         path=samples_path, key=key,
                         score=lambda text, p: {"extracted": extract(text), "correct": check(text, p.answer)})

    rows = [r for r in read_samples(samples_path, key).values() if r["problem_id"] in by_id]
    for r in rows:  # rescore with the current checker/protocol: the answer and the verdict
        r["extracted"] = extract(r["response"])
        r["correct"] = check(r["response"], by_id[r["problem_id"]].answer)
    metrics, per_problem = summarize(rows, by_id, equivalent, lambda a, g: check(f"\\boxed{{{a}}}", g))
    if s["protocol"] != "strict":  # the strict checker beside the protocol the run reports
        strict_rows = [r | {"extracted": extract_answer(r["response"]),
                            "correct": verify(r["response"], by_id[r["problem_id"]].answer)} for r in rows]
        strict, _ = summarize(strict_rows, by_id, equivalent, lambda a, g: verify(f"\\boxed{{{a}}}", g))
        metrics |= {f"eval/strict/{k.removeprefix('eval/')}": v for k, v in strict.items()
                    if k.startswith("eval/") and "/" not in k.removeprefix("eval/")
                    and "tokens" not in k}

    import pandas as pd

    table = pd.DataFrame(per_problem)
    atomic_write_text(out_dir / "per_problem.csv", table.to_csv(index=False))
    summary = pd.DataFrame([{"metric": k.removeprefix("eval/"), "value": round(100 * v, 2)}
                            for k, v in metrics.items() if k.startswith("eval/") and "tokens" not in k])
    summary.loc[len(summary)] = ["mean_response_tokens", round(metrics["eval/mean_response_tokens"], 1)]
    md = f"# {bench.name}: {cfg.experiment_name}\n\n" + summary.to_markdown(index=False) + "\n"
    atomic_write_text(out_dir / "summary.md", md)
    plot_subjects(metrics, out_dir / "subjects.png", f"{bench.name}: pass@1 by subject")
    print(md)
    return {"benchmark": bench.name, "sampling_key": key} | metrics  # the dispatcher writes metrics.json
