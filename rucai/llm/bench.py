"""Throughput of the hf backend: batched vs one-prompt-at-a-time generation.

    python -m rucai.llm.bench --batch-sizes 1 8 --prompts 16 --max-tokens 64

Greedy decoding of `--prompts` chat prompts with SmolLM2-135M-Instruct (default) on CPU; prints a
markdown table of generated tokens per second for each batch size and the ratio to batch size 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

QUESTIONS = [
    "What is the capital of France?", "Name three primary colours.", "Explain photosynthesis briefly.",
    "Write a haiku about the sea.", "What is 12 times 7?", "Give a synonym for happy.",
    "Why is the sky blue?", "List two uses of copper.", "What does a CPU do?",
    "Translate 'good morning' to Spanish.", "Describe a cat in one sentence.", "What is gravity?",
    "Suggest a name for a pet fish.", "How many legs does a spider have?", "What is an atom?",
    "Tell me a fun fact about the moon.",
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rucai.llm.bench", description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct", help="alias, folder, .gguf or HF id")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from rucai.errors import UserError
    from rucai.llm.base import SamplingParams
    from rucai.llm.hf import HFLLM

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        llm = HFLLM(args.model, device=args.device, batch_size=max(args.batch_sizes))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    prompts = [[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}] for i in range(args.prompts)]
    sp = SamplingParams(temperature=0, max_tokens=args.max_tokens)
    llm.batch_size = 1
    llm.generate(prompts[:1], sp.replace(max_tokens=4))  # warm-up
    rows = []
    for bs in args.batch_sizes:
        llm.batch_size = bs
        t0 = time.perf_counter()
        outs = llm.generate(prompts, sp)
        dt = time.perf_counter() - t0
        toks = sum(c.num_tokens for o in outs for c in o.completions)
        rows.append((bs, toks, dt, toks / dt))
    base = next((r[3] for r in rows if r[0] == 1), rows[0][3])
    print(f"\nmodel={args.model} device={args.device} threads={torch.get_num_threads()} "
          f"prompts={args.prompts} max_tokens={args.max_tokens} greedy\n")
    print("| batch size | generated tokens | seconds | tokens/s | vs batch 1 |")
    print("|---:|---:|---:|---:|---:|")
    for bs, toks, dt, tps in rows:
        print(f"| {bs} | {toks} | {dt:.1f} | {tps:.1f} | {tps / base:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
