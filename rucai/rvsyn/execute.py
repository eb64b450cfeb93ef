"""Running generated code: every program (a decomposition an LLM wrote, a seed or composed graph, an
equivalence probe) runs in the project's sandbox, `rucai.sandbox.run_many`, never in this process.

`run_programs(codes, ...)` -> one `Run` per program, in order: the sandbox status ("ok", "error",
"timeout", "memory", "blocked") and stdout. `execute_graphs(graphs, input_sets, ...)` runs graphs
rendered by `rucai.rvsyn.graph.program` and returns, per graph, the per-input-set results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rucai.errors import UserError
from rucai.rvsyn.graph import parse_program_output, program


@dataclass
class Run:
    status: str  # ok | error | timeout | memory | blocked | (no_output: ran but printed nothing usable)
    stdout: str
    stderr: str = ""


def _sandbox():
    try:
        from rucai import sandbox
    except ImportError as e:  # the shared sandbox is a core module; without it nothing generated may run
        raise UserError("rvsyn runs generated code only in the project's sandbox, and rucai.sandbox is not "
                        f"importable here ({e}); update the checkout") from e
    return sandbox


def run_programs(codes: Sequence[str], timeout_s: float = 5.0, memory_mb: int = 512,
                 workers: int | None = None) -> list[Run]:
    """Run each program in the sandbox; results in order."""
    if not codes:
        return []
    sb = _sandbox()
    try:
        results = sb.run_many(list(codes), timeout_s=timeout_s, memory_mb=memory_mb, workers=workers)
    except sb.SandboxUnavailable as e:
        raise UserError(f"the sandbox cannot run on this machine ({str(e).splitlines()[0]}); generated code is never "
                        f"run unconfined") from e
    return [Run(str(r.status), r.stdout or "", getattr(r, "stderr", "") or "") for r in results]


def execute_graphs(graphs: Sequence[dict[str, Any]], input_sets: Sequence[Sequence[dict[str, str]] | None] | None = None,
                   timeout_s: float = 5.0, memory_mb: int = 512, workers: int | None = None,
                   ) -> list[tuple[str, list[dict[str, Any]] | None]]:
    """Per graph: (sandbox status, the program's per-input-set results or None)."""
    sets = list(input_sets) if input_sets is not None else [None] * len(graphs)
    runs = run_programs([program(g, s) for g, s in zip(graphs, sets, strict=True)], timeout_s, memory_mb, workers)
    out = []
    for r in runs:
        parsed = parse_program_output(r.stdout) if r.status == "ok" else None
        out.append((r.status if parsed is not None or r.status != "ok" else "no_output", parsed))
    return out
