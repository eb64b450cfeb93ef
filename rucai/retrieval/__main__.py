"""`python -m rucai.retrieval build|serve|search|bench` (see rucai.retrieval for the formats).

  download --corpus kilt|hotpotqa_abstracts --out DIR   the R1-Searcher authors' corpora -> DIR/<corpus>.tsv
  build  --source hotpotqa_contexts|kilt|jsonl|tsv|r1searcher_tsv --input FILE --out DIR [--kinds bm25 dense]
         [--encoder all-minilm-l6-v2|bge-large-en-v1.5|<folder>]
  serve  --index DIR [--kind bm25] [--host 127.0.0.1] [--port 8765]
  search --index DIR|URL "query" [-k 3]
  bench  --index DIR [--kind bm25] [--queries FILE.jsonl] [-n 256]  queries/s, batched vs single
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from rucai.errors import UserError


def _bench(args: argparse.Namespace) -> dict:
    from rucai.retrieval import load_retriever

    questions = []
    with open(args.queries, encoding="utf-8") as f:
        for line in f:
            questions.append(json.loads(line)["question"])
    questions = (questions * (args.n // max(len(questions), 1) + 1))[: args.n]
    out = {}
    for kind in args.kind:
        r = load_retriever(args.index, kind=kind)
        r.search(questions[:4], k=args.k)  # warm up
        t = time.perf_counter()
        for q in questions:
            r.search([q], k=args.k)
        single = len(questions) / (time.perf_counter() - t)
        t = time.perf_counter()
        for s in range(0, len(questions), args.batch_size):
            r.search(questions[s:s + args.batch_size], k=args.k)
        batched = len(questions) / (time.perf_counter() - t)
        out[kind] = {"queries": len(questions), "single_qps": round(single, 1), "batched_qps": round(batched, 1),
                     "batch_size": args.batch_size, "speedup": round(batched / single, 2),
                     "num_passages": len(r.passages)}
        print(json.dumps({kind: out[kind]}))
    return out


def main(argv: list[str] | None = None) -> int:
    from rucai.retrieval.base import index_kinds

    kinds = index_kinds()  # the registered backends (rucai.retrieval imports them)
    p = argparse.ArgumentParser(prog="python -m rucai.retrieval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    from rucai.retrieval.corpus import SOURCES
    from rucai.retrieval.download import CORPORA

    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("download", help="fetch one of the R1-Searcher authors' corpora and write its TSV")
    d.add_argument("--corpus", required=True, choices=sorted(CORPORA))
    d.add_argument("--out", required=True)
    d.add_argument("--url", default=None, help="another source for the same file")
    b = sub.add_parser("build", help="split a corpus into passages and index it")
    b.add_argument("--source", required=True, choices=list(SOURCES))
    b.add_argument("--input", required=True)
    b.add_argument("--out", required=True)
    b.add_argument("--kinds", nargs="+", default=["bm25"], choices=kinds)
    b.add_argument("--words", type=int, default=100, help="passage length in words (kilt)")
    b.add_argument("--limit", type=int, default=None, help="stop after this many passages")
    b.add_argument("--encoder", default="all-minilm-l6-v2",
                   help="dense kind: all-minilm-l6-v2 | bge-large-en-v1.5 (the authors') | a model folder")
    s = sub.add_parser("serve", help="serve an index over HTTP")
    s.add_argument("--index", required=True)
    s.add_argument("--kind", default=None, choices=kinds)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8765)
    q = sub.add_parser("search", help="print the top-k passages of one query")
    q.add_argument("--index", required=True)
    q.add_argument("--kind", default=None, choices=kinds)
    q.add_argument("query")
    q.add_argument("-k", type=int, default=3)
    e = sub.add_parser("bench", help="queries/s, one query per call vs batched")
    e.add_argument("--index", required=True)
    e.add_argument("--kind", nargs="+", default=["bm25"], choices=kinds)
    e.add_argument("--queries", required=True, help="JSONL with a 'question' field")
    e.add_argument("-n", type=int, default=256)
    e.add_argument("-k", type=int, default=3)
    e.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        if args.cmd == "download":
            from rucai.retrieval.download import download_corpus

            tsv = download_corpus(args.corpus, args.out, url=args.url)
            print(f"{tsv}: index it with `python -m rucai.retrieval build --source r1searcher_tsv --input {tsv} "
                  f"--out <index dir> --kinds dense --encoder bge-large-en-v1.5`")
        elif args.cmd == "build":
            from rucai.retrieval.corpus import read_passages
            from rucai.retrieval.index import build_index

            passages = read_passages(args.source, args.input, words=args.words, limit=args.limit)
            out = build_index(passages, args.out, args.kinds, args.encoder,
                              {"source": args.source, "input": args.input, "words": args.words, "limit": args.limit})
            print(f"{len(passages)} passages -> {out} ({', '.join(args.kinds)})")
        elif args.cmd == "serve":
            from rucai.retrieval import load_retriever
            from rucai.retrieval.service import make_server

            server = make_server(load_retriever(args.index, kind=args.kind), args.host, args.port)
            host, port = server.server_address[:2]
            print(f"serving {args.index} on http://{host}:{port} (POST /search, /queries; GET /health)", flush=True)
            try:
                server.serve_forever()
            except KeyboardInterrupt:
                pass
        elif args.cmd == "search":
            from rucai.retrieval import load_retriever

            for i, hit in enumerate(load_retriever(args.index, kind=args.kind).search([args.query], args.k)[0]):
                print(f"({i + 1}) [{hit.score:.3f}] {hit.title}: {hit.text[:200]}")
        elif args.cmd == "bench":
            _bench(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
