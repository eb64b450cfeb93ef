"""Snippets per second: the sandbox pool against one fresh `python` process per snippet.

    python -m rucai.sandbox.bench [--n 200] [--workers N] [--out /tmp/sandbox_bench.json]

Both sides run `workers` snippets at a time. The fresh-process side is a bare `python -c` (no
limits, no filter), so the ratio understates what the pool saves over a sandboxed process per
snippet. Pool start-up is timed separately and left out of its rate: the pool is started once.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from rucai.sandbox import SandboxPool

CODE = "print(sum(range(100)))"
EXPECT = "4950\n"


def fresh_process(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="snippets per side")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="snippets at a time, both sides")
    ap.add_argument("--out", default="/tmp/sandbox_bench.json")
    args = ap.parse_args(argv)
    codes = [CODE] * args.n

    with SandboxPool() as pool:
        t0 = time.perf_counter()
        pool.run_many([CODE] * args.workers, workers=args.workers)  # start every worker
        start_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        results = pool.run_many(codes, workers=args.workers)
        pool_s = time.perf_counter() - t0
        isolation = pool.isolation()
    bad = [r for r in results if (r.status, r.stdout) != ("ok", EXPECT)]
    if bad:
        raise SystemExit(f"error: {len(bad)} pool snippets failed, first: {bad[0]}")

    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.workers) as ex:
        outs = list(ex.map(fresh_process, codes))
    fresh_s = time.perf_counter() - t0
    if any(o != EXPECT for o in outs):
        raise SystemExit("error: a fresh-process snippet printed something unexpected")

    report = {
        "snippets": args.n, "workers": args.workers, "code": CODE,
        "pool_start_s": round(start_s, 3),
        "pool_snippets_per_s": round(args.n / pool_s, 1),
        "fresh_process_snippets_per_s": round(args.n / fresh_s, 1),
        "speedup": round(fresh_s / pool_s, 2),
        "pool_mean_ms_in_worker": round(1000 * sum(r.seconds for r in results) / len(results), 2),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "isolation": isolation,
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    print(json.dumps({k: v for k, v in report.items() if k != "isolation"}, indent=2))
    return report


if __name__ == "__main__":
    main()
