"""Rollout throughput with and without the retrieval service in the loop, and retrieval queries/s.

  python -m rucai.r1searcher.bench --index outputs/r1searcher/index_hotpotqa --questions 16

Settings, same questions and sampling seed: `cached` (the same passages, looked up in a dict: no
retrieval in the loop), `inprocess` (BM25 in the rollout process), `http` (the 127.0.0.1 service, one
batched request per round), `none` (no retriever: a query gets `None` back, so later prompts are
shorter). `--force-search` makes round 1 a search with the question as the query (a model that
never searches by itself, like SmolLM2-135M, then still exercises the loop); later rounds are the
model's. Prints one JSON line per setting: questions/s, searches, seconds generating vs retrieving.
"""

from __future__ import annotations

import argparse
import json
import time


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m rucai.r1searcher.bench")
    p.add_argument("--index", required=True)
    p.add_argument("--kind", default="bm25")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--data", default=None, help="JSONL with question (default: the stage-1 training set)")
    p.add_argument("--questions", type=int, default=16)
    p.add_argument("--max-tokens-per-round", type=int, default=96)
    p.add_argument("--max-rounds", type=int, default=3)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--settings", nargs="+", default=["cached", "inprocess", "http"])
    p.add_argument("--force-search", action="store_true")
    args = p.parse_args(argv)

    import os

    from rucai.llm.base import LLM, Completion, RequestOutput, SamplingParams
    from rucai.r1searcher.prompts import BEGIN_QUERY, search_prompt
    from rucai.r1searcher.rollout import SearchRolloutEngine, search_hf_llm
    from rucai.r1searcher.tasks import policy_folder, tiny_policy
    from rucai.retrieval.base import Retriever

    class Cached(Retriever):
        kind = "cached"

        def __init__(self, table):
            self.table = table

        def search(self, queries, k=3):
            return [self.table[q][:k] for q in queries]

    class ForcedFirst(LLM):
        """Round 1: the question as a query (no model call); afterwards the wrapped model."""

        backend = "forced"

        def __init__(self, inner, queries):
            super().__init__(sampling={"temperature": 0.0})
            self.inner, self.queries = inner, queries

        def _generate(self, prompts, sampling):
            if all(p in self.queries for p in prompts):
                return [RequestOutput(index=-1, prompt_tokens=0, completions=[
                    Completion(f" {BEGIN_QUERY} {self.queries[p]}", 0, "stop:<|end_of_query|>")]) for p in prompts]
            return self.inner.generate(prompts, sampling)

    from rucai.retrieval import load_retriever
    from rucai.retrieval.service import BackgroundServer, HTTPRetriever

    data = args.data or os.path.join(os.environ.get("RUCAI_DATA_DIR", "data"), "multihop_qa",
                                     "r1searcher_stage1_train.jsonl")
    rows = [json.loads(x) for x in open(data, encoding="utf-8").read().splitlines()[: args.questions]]
    model = args.model if args.model != "tiny" else tiny_policy(policy_folder("smollm2-135m-instruct"), ".cache")
    llm = search_hf_llm(model=policy_folder(model), batch_size=args.batch_size, device="cpu")
    questions = [r["question"] for r in rows]
    prompts = [search_prompt(q, "chat", llm.tokenizer) for q in questions]
    local = load_retriever(args.index, kind=args.kind)
    gen = ForcedFirst(llm, dict(zip(prompts, questions, strict=True))) if args.force_search else llm
    sp = SamplingParams(temperature=args.temperature, top_p=1.0, max_tokens=args.max_tokens_per_round, seed=1)
    llm.generate(prompts[:2], sp.replace(max_tokens=4))  # warm up
    print(json.dumps({"model": args.model, "questions": len(questions), "force_search": args.force_search,
                      "max_tokens_per_round": args.max_tokens_per_round, "max_rounds": args.max_rounds}), flush=True)
    for setting in args.settings:
        server = None
        if setting == "none":
            retriever = None
        elif setting == "cached":
            clean = [q.replace('"', "").replace("'", "").replace("\t", " ").replace("...", "").strip() for q in questions]
            retriever = Cached(dict(zip(clean, local.search(clean, 3), strict=True)))
        elif setting == "inprocess":
            retriever = local
        else:
            server = BackgroundServer(local)
            retriever = HTTPRetriever(server.__enter__())
        eng = SearchRolloutEngine(gen, retriever, topk=3, max_searches=args.max_rounds, max_rounds=args.max_rounds,
                                  max_tokens_per_round=args.max_tokens_per_round)
        t = time.perf_counter()
        rolls = eng.run(questions, prompts, sp)
        dt = time.perf_counter() - t
        if server is not None:
            server.__exit__()
        print(json.dumps({"setting": setting, "questions": len(rolls), "seconds": round(dt, 2),
                          "questions_per_s": round(len(rolls) / dt, 4),
                          "searches": sum(r.num_searches for r in rolls),
                          "generate_s": round(eng.stats["generate_s"], 2),
                          "retrieval_s": round(eng.stats["retrieval_s"], 4), "rounds": eng.stats["rounds"]}),
              flush=True)


if __name__ == "__main__":
    main()
