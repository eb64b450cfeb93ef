"""Step 1 of RV-Syn: decompose seed solutions into Python functions, one per mathematical operation,
wired into a computational graph, and keep a decomposition only if running it reproduces the gold
answer.

Two decomposers behind one interface (`Decomposer`: `load_seeds()`, then `propose(seeds)` -> one
`Proposal` per seed: a candidate graph, or the reason there is none); `verify_proposals` runs each
candidate in the sandbox and keeps the ones whose answer equals the seed's gold.

  gsm8k  deterministic: calculator annotations `<<expr=value>>` of GSM8K solutions (`rucai.rvsyn.gsm8k`)
  llm    a model rewrites a seed solution as Python (one function per operation, named parameters, a
         docstring each) plus `solution()` composing them; the code is parsed with `ast`, run in the
         sandbox, kept when its printed result matches the gold (`rucai.eval.math.verify`, or equal
         numbers), and its graph is read off `solution()`'s straight-line body (each call one step,
         number literals the graph's inputs, names the data flow).
"""

from __future__ import annotations

import abc
import ast
import json
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from rucai.errors import UserError
from rucai.rvsyn.graph import ancestors_only, fmt_number, function_id, numbers_equal, structure_key, to_number


@dataclass
class Seed:
    id: str
    problem: str
    solution: str
    gold: str | None
    topic: str | None = None  # the seed's subject (MATH `type`); GSM8K: tagged per operation


@dataclass
class Proposal:
    seed_id: str
    graph: dict[str, Any] | None
    reason: str = ""  # why there is no graph
    info: dict[str, Any] = field(default_factory=dict)


def read_jsonl(path: str | Path, what: str) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} {p} not found: see ../shared/README.md (or set paths.data_dir / method.*)")
    return [json.loads(ln) for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]


class Decomposer(abc.ABC):
    name: str = "?"

    @abc.abstractmethod
    def load_seeds(self) -> list[Seed]: ...

    @abc.abstractmethod
    def propose(self, seeds: list[Seed]) -> list[Proposal]: ...

    def answer_matches(self, value: str, gold: str) -> bool:
        return numbers_equal(value, gold)


# --------------------------------------------------------------------------------------------- gsm8k


class GSM8KDecomposer(Decomposer):
    """Calculator annotations -> graph (deterministic; see `rucai.rvsyn.gsm8k`)."""

    name = "gsm8k"

    def __init__(self, path: str, max_seeds: int | None = None, constants: str = "question",
                 answer_step: str = "last") -> None:
        self.path, self.max_seeds, self.constants, self.answer_step = path, max_seeds, constants, answer_step

    def load_seeds(self) -> list[Seed]:
        from rucai.rvsyn.gsm8k import gold_answer

        rows = read_jsonl(self.path, "method.decompose.gsm8k.path")
        seeds = [Seed(f"gsm8k-{r.get('idx', i)}", r["question"], r["answer"], gold_answer(r["answer"]))
                 for i, r in enumerate(rows)]
        return seeds[: self.max_seeds or None]

    def propose(self, seeds: list[Seed]) -> list[Proposal]:
        from rucai.rvsyn.gsm8k import decompose

        out = []
        for s in seeds:
            d = decompose(s.problem, s.solution, self.constants, self.answer_step)
            out.append(Proposal(s.id, d.graph, d.reason, d.info))
        return out


# ----------------------------------------------------------------------------------------------- llm

DECOMPOSE_PROMPT = """Rewrite the solution of the math problem below as Python code.
Write one function for each mathematical operation, with named parameters and a one-line docstring.
Then write `def solution():` that calls these functions with the numbers from the problem, one call per line, \
and returns the final answer. Use only the standard library.

Example
Problem: Janet's ducks lay 16 eggs per day. She eats 3 and bakes with 4. She sells the rest for $2 each. How much does she make?
Solution: She sells 16 - 3 - 4 = 9 eggs, so she makes 9 * 2 = 18 dollars.
```python
def eggs_left(laid, eaten, baked):
    \"\"\"Eggs left after eating some and baking with some.\"\"\"
    return laid - eaten - baked

def income(count, price):
    \"\"\"Money from selling `count` items at `price` each.\"\"\"
    return count * price

def solution():
    left = eggs_left(16, 3, 4)
    return income(left, 2)
```

Problem: {problem}
Solution: {solution}
```python
"""


def math_gold(solution: str) -> str | None:
    """MATH's gold answer: the last \\boxed{} of the reference solution."""
    from rucai.eval.math import extract_answer

    return extract_answer(solution)


def extract_code(text: str) -> str:
    """The code of a model's reply: the first fenced block, else everything from the first `def`/`import`."""
    m = re.search(r"```(?:python|py)?\s*\n(.*?)(```|$)", text, re.DOTALL)
    if m and "def " in m.group(1):
        return m.group(1)
    m = re.search(r"^(?:def |import |from )", text, re.MULTILINE)
    return text[m.start():] if m else text


def parse_code(code: str, max_trim: int = 8) -> ast.Module | None:
    """`ast.parse`, dropping up to `max_trim` trailing lines (a reply cut off by max_tokens)."""
    lines = code.rstrip().splitlines()
    for k in range(min(max_trim, len(lines)) + 1):
        try:
            tree = ast.parse("\n".join(lines[: len(lines) - k]))
        except SyntaxError:
            continue
        return tree if any(isinstance(n, ast.FunctionDef) for n in tree.body) else None
    return None


def _number_literal(node: ast.expr) -> Fraction | None:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        v = _number_literal(node.operand)
        return -v if v is not None else None
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return to_number(node.value if isinstance(node.value, int) else repr(node.value))
    return None


_ARITH = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow)


def read_decomposition(tree: ast.Module, topic: str, lift_inline: bool = False,
                       stated: set[Fraction] | None = None) -> tuple[dict[str, Any] | None, str]:
    """(graph, "") from a parsed decomposition, or (None, reason): the functions (every top-level def
    but `solution`), `solution()`'s straight-line body as steps.

    lift_inline: arithmetic written inside `solution()` (`left = 47 + 49`) becomes a function of its
    own (one per expression, as a GSM8K annotation: its operands are parameters, except numbers absent
    from `stated` (the problem's numbers, when given), which stay literals)."""
    imports = [ast.unparse(n) for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    defs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    sol = defs.pop("solution", None)
    if sol is None:
        return None, "no_solution_function"
    if not defs and not lift_inline:
        return None, "no_operation_functions"
    functions: dict[str, dict[str, Any]] = {}
    by_name: dict[str, str] = {}
    for name, d in defs.items():
        a = d.args
        if a.vararg or a.kwarg or a.kwonlyargs or a.posonlyargs or a.defaults or not a.args:
            return None, "function_signature"
        called = {n.func.id for n in ast.walk(d) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        if called & (set(defs) | {"solution"}):
            return None, "function_calls_function"
        src = ast.unparse(d) + "\n"
        fid = function_id(structure_key(src))
        doc = ast.get_docstring(d) or ""
        functions[fid] = {"id": fid, "name": name, "params": [x.arg for x in a.args], "source": src, "topic": topic,
                          "doc": doc, "origin": "llm", "imports": imports, "numeric": "python"}
        by_name[name] = fid
    steps: list[dict[str, Any]] = []
    inputs: dict[str, str] = {}
    env: dict[str, dict[str, Any]] = {}

    def arg_ref(node: ast.expr) -> dict[str, Any] | None:
        v = _number_literal(node)
        if v is not None:
            name = f"x{len(inputs)}"
            inputs[name] = fmt_number(v)
            return {"input": name}
        if isinstance(node, ast.Name) and node.id in env:
            return env[node.id]
        if isinstance(node, ast.Call):
            k = call(node)
            return {"step": k} if k is not None else None
        if lift_inline and isinstance(node, ast.BinOp | ast.UnaryOp):
            k = lift(node)
            return {"step": k} if k is not None else None
        return None

    def lift(node: ast.expr) -> int | None:
        """One function for an inline arithmetic expression; its leaves are the call's arguments."""
        args: list[dict[str, Any]] = []

        def rebuild(n: ast.expr) -> ast.expr | None:
            v = _number_literal(n)
            if v is not None:
                if stated is not None and v not in stated:
                    return ast.Constant(value=int(v)) if v.denominator == 1 else ast.Constant(value=float(v))
                ref = arg_ref(n)
            elif isinstance(n, ast.BinOp) and isinstance(n.op, _ARITH):
                left, right = rebuild(n.left), rebuild(n.right)
                return ast.BinOp(left, n.op, right) if left is not None and right is not None else None
            elif isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub | ast.UAdd):
                inner = rebuild(n.operand)
                return ast.UnaryOp(n.op, inner) if inner is not None else None
            elif isinstance(n, ast.Name | ast.Call):
                ref = arg_ref(n)
            else:
                return None
            if ref is None:
                return None
            args.append(ref)
            return ast.Name(id=f"p{len(args) - 1}", ctx=ast.Load())

        body = rebuild(node)
        if body is None or not any(isinstance(n, ast.BinOp | ast.UnaryOp) for n in ast.walk(body)):
            return None
        params = ", ".join(f"p{i}" for i in range(len(args)))
        src = f"def f({params}):\n    return {ast.unparse(body)}\n"
        fid = function_id(structure_key(src))
        name = f"{re.sub(r'[^a-z]+', '_', topic.lower()).strip('_') or 'op'}_{fid[3:9]}"
        functions.setdefault(fid, {"id": fid, "name": name, "params": [f"p{i}" for i in range(len(args))],
                                   "source": src.replace("def f(", f"def {name}(", 1), "topic": topic, "doc": "",
                                   "origin": "llm", "imports": [], "numeric": "python", "lifted": True})
        steps.append({"fn": fid, "args": args})
        return len(steps) - 1

    def call(node: ast.Call) -> int | None:
        if not (isinstance(node.func, ast.Name) and node.func.id in by_name):
            return None
        fn = functions[by_name[node.func.id]]
        if len(node.args) + len(node.keywords) != len(fn["params"]):
            return None
        slots: list[dict[str, Any] | None] = [None] * len(fn["params"])
        for i, a in enumerate(node.args):
            slots[i] = arg_ref(a)
        for kw in node.keywords:
            if kw.arg not in fn["params"]:
                return None
            slots[fn["params"].index(kw.arg)] = arg_ref(kw.value)
        if any(s is None for s in slots):
            return None
        steps.append({"fn": fn["id"], "args": slots})
        return len(steps) - 1

    body = sol.body[1:] if ast.get_docstring(sol) else sol.body
    answer: int | None = None
    for stmt in body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            ref = arg_ref(stmt.value)
            if ref is None:
                return None, "not_straight_line"
            env[stmt.targets[0].id] = ref
        elif isinstance(stmt, ast.Return) and stmt.value is not None:
            ref = arg_ref(stmt.value)
            if ref is None or "step" not in ref:
                return None, "not_straight_line"
            answer = ref["step"]
            break
        else:
            return None, "not_straight_line"
    if answer is None:
        return None, "no_return"
    graph = ancestors_only({"inputs": inputs, "steps": steps, "functions": functions}, out=answer)
    if not graph["steps"]:
        return None, "no_operation_functions"
    return graph, ""


_RUN_SOLUTION = """

import json as _json
_r = solution()
print(_json.dumps({"answer": repr(_r) if isinstance(_r, float) else str(_r)}))
"""


def answer_text(value: str) -> str:
    """A float result that is a simple fraction within 1e-9 is read as that fraction (0.333... -> 1/3)."""
    v = to_number(value)
    if v is None or v.denominator == 1:
        return value
    close = v.limit_denominator(1000)
    return fmt_number(close) if abs(float(close) - float(v)) <= 1e-9 * max(1.0, abs(float(v))) else value


def gold_matches(value: str, gold: str) -> bool:
    """The strict math checker on `\\boxed{value}`, or equal numbers."""
    from rucai.eval.math import verify

    return numbers_equal(value, gold) or verify(f"\\boxed{{{answer_text(value)}}}", gold)


class LLMDecomposer(Decomposer):
    """A model writes the decomposition; `propose` generates, parses and runs `solution()` in the sandbox."""

    name = "llm"

    def __init__(self, path: str, exclude: str | None, max_seeds: int | None, llm_factory: Any, max_tokens: int,
                 temperature: float, seed: int, timeout_s: float, memory_mb: int, workers: int | None = None,
                 lift_inline: bool = True) -> None:
        self.path, self.exclude, self.max_seeds, self.lift_inline = path, exclude, max_seeds, lift_inline
        self.llm_factory, self.max_tokens, self.temperature, self.seed = llm_factory, max_tokens, temperature, seed
        self.timeout_s, self.memory_mb, self.workers = timeout_s, memory_mb, workers
        self._llm: Any = None

    def load_seeds(self) -> list[Seed]:
        rows = read_jsonl(self.path, "method.decompose.llm.path")
        excl = {r["problem"] for r in read_jsonl(self.exclude, "method.decompose.llm.exclude")} if self.exclude else set()
        seeds = []
        for i, r in enumerate(rows):
            if r["problem"] in excl:
                continue
            seeds.append(Seed(f"math-{r.get('idx', i)}", r["problem"], r["solution"], math_gold(r["solution"]),
                              r.get("type") or r.get("subject")))
        return seeds[: self.max_seeds or None]

    def answer_matches(self, value: str, gold: str) -> bool:
        return gold_matches(value, gold)

    def propose(self, seeds: list[Seed]) -> list[Proposal]:
        from rucai.llm.base import SamplingParams
        from rucai.rvsyn.execute import run_programs

        if not seeds:
            return []
        if self._llm is None:
            self._llm = self.llm_factory()
        prompts = [[{"role": "user", "content": DECOMPOSE_PROMPT.format(problem=s.problem, solution=s.solution)}]
                   for s in seeds]
        outs = self._llm.generate(prompts, SamplingParams(temperature=float(self.temperature), top_p=1.0,
                                                          max_tokens=int(self.max_tokens), seed=int(self.seed)))
        props: list[Proposal | None] = [None] * len(seeds)
        to_run: list[tuple[int, str, ast.Module]] = []
        for i, (s, o) in enumerate(zip(seeds, outs, strict=True)):
            code = extract_code(o.text)
            tree = parse_code(code)
            if s.gold is None:
                props[i] = Proposal(s.id, None, "no_gold", {"reply": o.text})
            elif tree is None:
                props[i] = Proposal(s.id, None, "syntax_error" if "def " in code else "no_code", {"reply": o.text})
            else:
                to_run.append((i, ast.unparse(tree), tree))
        runs = run_programs([c + _RUN_SOLUTION for _, c, _ in to_run], self.timeout_s, self.memory_mb, self.workers)
        for (i, code, tree), r in zip(to_run, runs, strict=True):
            s = seeds[i]
            info = {"code": code}
            value = None
            if r.status == "ok":
                try:
                    value = json.loads([ln for ln in r.stdout.splitlines() if ln.strip()][-1])["answer"]
                except (IndexError, json.JSONDecodeError, KeyError, TypeError):
                    value = None
            if r.status != "ok" or value is None:
                props[i] = Proposal(s.id, None, f"run_{r.status if r.status != 'ok' else 'no_output'}", info)
                continue
            info["result"] = value
            if not gold_matches(value, s.gold or ""):
                props[i] = Proposal(s.id, None, "wrong_answer", info)
                continue
            from rucai.rvsyn.gsm8k import text_numbers

            graph, reason = read_decomposition(tree, s.topic or "mathematics", self.lift_inline,
                                               set(text_numbers(s.problem)))
            if graph is not None:
                info["lifted_steps"] = sum(bool(graph["functions"][st["fn"]].get("lifted")) for st in graph["steps"])
            props[i] = Proposal(s.id, graph, reason, info)
        return [p for p in props if p is not None]


def verify_proposals(decomposer: Decomposer, seeds: list[Seed], proposals: list[Proposal], timeout_s: float = 5.0,
                     memory_mb: int = 512, workers: int | None = None) -> list[dict[str, Any]]:
    """Run every candidate graph in the sandbox; one row per seed: status "kept" when the graph's
    answer equals the seed's gold, else the reason (the proposal's, or run_<status>, wrong_answer)."""
    from rucai.rvsyn.execute import execute_graphs

    by_id = {s.id: s for s in seeds}
    with_graph = [p for p in proposals if p.graph is not None]
    results = dict(zip([p.seed_id for p in with_graph],
                       execute_graphs([p.graph for p in with_graph], None, timeout_s, memory_mb, workers), strict=True))
    rows = []
    for p in proposals:
        s = by_id[p.seed_id]
        row: dict[str, Any] = {"seed_id": s.id, "decomposer": decomposer.name, "gold": s.gold, "topic": s.topic,
                               "status": p.reason or "kept", "graph": None, "answer": None, "info": p.info}
        if p.graph is not None:
            status, res = results[p.seed_id]
            if status != "ok" or not res:
                row["status"] = f"run_{status}"
            elif not res[0].get("ok"):
                row["status"] = f"run_error:{res[0].get('error')}"
            else:
                values = res[0]["values"]
                row["answer"] = values[-1]
                if s.gold is not None and decomposer.answer_matches(values[-1], s.gold):
                    row["graph"] = p.graph | {"values": values}
                else:
                    row["status"] = "wrong_answer"
        rows.append(row)
    return rows
