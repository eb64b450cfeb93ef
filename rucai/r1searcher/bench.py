"""Rollout throughput with and without the retrieval service in the loop, and retrieval queries/s.

  python -m rucai.r1searcher.bench --index outputs/r1searcher/index_hotpotqa --questions 16

Settings, same questions and sampling seed: `none` (no retriever: a query gets `None` back),
`inprocess` (BM25 in the rollout process), `http` (the 127.0.0.1 service, one batched request per
round). Prints one JSON line per setting: questions/s, searches, time spent generating vs retrieving.
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
    p.add_argument("--settings", nargs="+", default=["none", "inprocess", "http"])
    args = p.parse_args(argv)

    import os

    from rucai.llm.base import SamplingParams
    from rucai.r1searcher.prompts import search_prompt
    from rucai.r1searcher.rollout import SearchRolloutEngine, search_hf_llm
    from rucai.r1searcher.tasks import policy_folder
    from rucai.retrieval import load_retriever
    from rucai.retrieval.service import BackgroundServer, HTTPRetriever

    data = args.data or os.path.join(os.environ.get("RUCAI_DATA_DIR", "data"), "multihop_qa",
                                     "r1searcher_stage1_train.jsonl")
    rows = [json.loads(x) for x in open(data, encoding="utf-8").read().splitlines()[: args.questions]]
    llm = search_hf_llm(model=policy_folder(args.model), batch_size=args.batch_size, device="cpu")
    questions = [r["question"] for r in rows]
    prompts = [search_prompt(q, "chat", llm.tokenizer) for q in questions]
    local = load_retriever(args.index, kind=args.kind)
    sp = SamplingParams(temperature=args.temperature, top_p=1.0, max_tokens=args.max_tokens_per_round, seed=1)
    llm.generate(prompts[:2], sp.replace(max_tokens=4))  # warm up
    for setting in args.settings:
        server = None
        if setting == "none":
            retriever = None
        elif setting == "inprocess":
            retriever = local
        else:
            server = BackgroundServer(local)
            retriever = HTTPRetriever(server.__enter__())
        eng = SearchRolloutEngine(llm, retriever, topk=3, max_searches=args.max_rounds, max_rounds=args.max_rounds,
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
