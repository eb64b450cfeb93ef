"""Functions, computational graphs, numbers, and the Python program that executes a graph.

A function (a library node) is a dict:

    {"id": "fn_…", "name": "…", "params": ["p0", …], "source": "def name(p0, …):\\n    return …\\n",
     "topic": "…", "doc": "…", "origin": "gsm8k" | "llm", "imports": ["import math", …],
     "numeric": "exact" | "python"}

`numeric` says how arguments reach it: "exact" passes `fractions.Fraction` (calculator expressions
stay exact: 2/3*3 == 2), "python" passes an int when the value is integral, else a float (code an
LLM wrote may call `range`, `math.comb`, ...).

A graph is a dict:

    {"inputs": {"x0": "16", …},                                   # exact decimal strings
     "steps": [{"fn": "fn_…", "args": [{"input": "x0"} | {"step": 0} | {"literal": "2"}, …]}, …],
     "functions": {"fn_…": <function>, …}}                         # self-contained

Steps are in topological order (an argument refers to earlier steps only); the answer is the last
step's value. `program(graph, input_sets)` renders the graph as one Python program that runs it on
each input set and prints one JSON line: per set, the value of every step (exact strings) or the
error. Programs only ever run in the project's sandbox (`rucai.rvsyn.execute`).
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import re
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

# ------------------------------------------------------------------------------------------ numbers

_NUM = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def to_number(s: Any) -> Fraction | float | None:
    """An exact value for an int/decimal/"a/b" string (or number); a float for a float repr that is
    not exact (`1e300`, `inf` -> None); None when it is not a number."""
    if isinstance(s, bool) or s is None:
        return None
    if isinstance(s, Fraction):
        return s
    if isinstance(s, int):
        return Fraction(s)
    if isinstance(s, float):
        return Fraction(s) if math.isfinite(s) else None
    t = str(s).strip().replace(",", "")
    if not t:
        return None
    try:
        if "/" in t:
            a, b = t.split("/", 1)
            return Fraction(int(a), int(b))
        if _NUM.match(t):
            return Fraction(t)
        v = float(t)
        return Fraction(v) if math.isfinite(v) else None
    except (ValueError, ZeroDivisionError, OverflowError):
        return None


def fmt_number(v: Fraction | int | float, max_decimals: int = 6) -> str:
    """The shortest exact text of a value: "18", "2.5", "-0.125"; a fraction that has no short
    decimal form as "10/3"; no thousands separators (problems and the re-parse check read them)."""
    f = Fraction(v) if not isinstance(v, Fraction) else v
    if f.denominator == 1:
        return str(f.numerator)
    d = f.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    if d == 1:  # a terminating decimal
        for k in range(1, max_decimals + 1):
            scaled = f * 10**k
            if scaled.denominator == 1:
                sign = "-" if f < 0 else ""
                n = abs(scaled.numerator)
                s = str(n).rjust(k + 1, "0")
                return f"{sign}{s[:-k]}.{s[-k:]}"
    return f"{f.numerator}/{f.denominator}"


def numbers_equal(a: Any, b: Any, rel: float = 1e-6) -> bool:
    """Exact equality of exact values; relative tolerance when either side came from a float."""
    x, y = to_number(a), to_number(b)
    if x is None or y is None:
        return False
    if x == y:
        return True
    return math.isclose(float(x), float(y), rel_tol=rel, abs_tol=1e-9)


def decimals(v: Fraction) -> int:
    """Decimal places of a terminating decimal (0 for integers; 6 for the rest)."""
    s = fmt_number(v)
    return len(s.split(".", 1)[1]) if "." in s else (0 if "/" not in s else 6)


# ----------------------------------------------------------------------------------------- functions


def function_id(struct_key: str) -> str:
    return "fn_" + hashlib.sha1(struct_key.encode()).hexdigest()[:12]


def parse_function(source: str) -> ast.FunctionDef:
    tree = ast.parse(source)
    defs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    if len(defs) != 1:
        raise ValueError("a function source holds exactly one def")
    return defs[0]


def structure_key(source: str) -> str:
    """The function's structure: its AST with the docstring dropped, the name set to `f`, the
    parameters renamed p0, p1, ... in order and the other local names v0, v1, ... in order of first
    appearance (globals such as `math` kept), as `ast.dump`. Two functions that differ only in names
    (and docstrings) have the same key."""
    fn = parse_function(source)
    fn = ast.parse(ast.unparse(fn)).body[0]  # a copy
    assert isinstance(fn, ast.FunctionDef)
    body = fn.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:] or [ast.Pass()]
    fn.body = body
    fn.name = "f"
    fn.returns = None
    fn.decorator_list = []
    rename: dict[str, str] = {}
    all_args = fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs
    for i, a in enumerate(all_args):
        rename[a.arg] = f"p{i}"
        a.arg, a.annotation = f"p{i}", None
    stored = []
    for node in ast.walk(fn):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and node.id not in rename:
            stored.append(node)
        elif isinstance(node, ast.arg) and node.arg not in rename.values():  # lambda / comprehension args
            stored.append(node)
    for node in sorted(stored, key=lambda n: (getattr(n, "lineno", 0), getattr(n, "col_offset", 0))):
        name = node.id if isinstance(node, ast.Name) else node.arg
        rename.setdefault(name, f"v{len(rename) - len(all_args)}")

    class _R(ast.NodeTransformer):
        def visit_Name(self, node: ast.Name) -> ast.AST:
            if node.id in rename:
                node.id = rename[node.id]
            return node

        def visit_arg(self, node: ast.arg) -> ast.AST:
            if node.arg in rename:
                node.arg = rename[node.arg]
            node.annotation = None
            return node

    fn = _R().visit(fn)
    return ast.dump(fn, annotate_fields=False, include_attributes=False)


def arithmetic_body(fn: dict[str, Any]) -> ast.expr | None:
    """The returned expression of a one-line arithmetic function (`return <expr over params>`), else None."""
    try:
        node = parse_function(fn["source"])
    except (SyntaxError, ValueError):
        return None
    body = [s for s in node.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
    if len(body) != 1 or not isinstance(body[0], ast.Return) or body[0].value is None:
        return None
    expr = body[0].value
    for n in ast.walk(expr):
        if isinstance(n, ast.Call):
            if not (isinstance(n.func, ast.Name) and n.func.id == "Fraction"):
                return None
        elif not isinstance(n, ast.expr | ast.operator | ast.unaryop | ast.expr_context):
            return None
        elif isinstance(n, ast.Name) and n.id not in fn["params"] and n.id != "Fraction":
            return None
    return expr


def literal_value(node: ast.expr) -> Fraction | None:
    """The value of a literal constant node: `2`, `Fraction('0.5')`."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return to_number(node.value) if isinstance(node.value, int) else to_number(repr(node.value))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Fraction" \
            and len(node.args) == 1 and isinstance(node.args[0], ast.Constant):
        return to_number(node.args[0].value)
    return None


# -------------------------------------------------------------------------------------------- graphs


def depth(graph: dict[str, Any]) -> int:
    """The number of functions on the longest path into the answer (a single step: 1)."""
    d: list[int] = []
    for st in graph["steps"]:
        d.append(1 + max([d[a["step"]] for a in st["args"] if "step" in a] or [0]))
    return d[-1] if d else 0


def width(graph: dict[str, Any]) -> int:
    """The largest number of steps at one distance from the answer."""
    n = len(graph["steps"])
    if not n:
        return 0
    dist = [0] * n
    for k in range(n - 1, -1, -1):
        for a in graph["steps"][k]["args"]:
            if "step" in a:
                dist[a["step"]] = max(dist[a["step"]], dist[k] + 1)
    return max(dist.count(v) for v in set(dist))


def topics(graph: dict[str, Any]) -> list[str]:
    return sorted({graph["functions"][s["fn"]]["topic"] for s in graph["steps"]})


def ancestors_only(graph: dict[str, Any], out: int | None = None) -> dict[str, Any]:
    """The graph restricted to the steps the answer (step `out`, default the last) depends on;
    step indices and inputs renumbered."""
    steps = graph["steps"]
    out = len(steps) - 1 if out is None else out
    need = {out}
    for k in range(out, -1, -1):
        if k in need:
            need |= {a["step"] for a in steps[k]["args"] if "step" in a}
    keep = sorted(need)
    new_index = {old: i for i, old in enumerate(keep)}
    inputs: dict[str, str] = {}
    new_steps = []
    for old in keep:
        args = []
        for a in steps[old]["args"]:
            if "step" in a:
                args.append({"step": new_index[a["step"]]})
            elif "input" in a:
                name = f"x{len(inputs)}"
                inputs[name] = graph["inputs"][a["input"]]
                args.append({"input": name})
            else:
                args.append(dict(a))
        new_steps.append({**steps[old], "args": args})
    used = {s["fn"] for s in new_steps}
    return {**graph, "inputs": inputs, "steps": new_steps,
            "functions": {k: v for k, v in graph["functions"].items() if k in used}}


def signature(graph: dict[str, Any]) -> str:
    """A hash of what a graph computes (functions, wiring, inputs): duplicates share it."""
    blob = json.dumps({"steps": graph["steps"], "inputs": graph["inputs"]}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------ programs

_RUNTIME = '''
import json as _json
import math as _math
from fractions import Fraction


def _exact(v):
    if isinstance(v, bool):
        raise TypeError("a boolean is not a number")
    if isinstance(v, Fraction):
        return v
    if isinstance(v, int):
        return Fraction(v)
    if isinstance(v, float):
        if not _math.isfinite(v):
            raise ValueError("not finite")
        return v
    return v


def _py(v):
    if isinstance(v, Fraction):
        return int(v) if v.denominator == 1 else float(v)
    return v


def _text(v):
    if isinstance(v, bool):
        raise TypeError("a boolean is not a number")
    if isinstance(v, Fraction):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not _math.isfinite(v):
            raise ValueError("not finite")
        return repr(v)
    raise TypeError("not a number: " + type(v).__name__)
'''


def _renamed_source(fn: dict[str, Any], name: str) -> str:
    node = parse_function(fn["source"])
    node.name = name
    return ast.unparse(node)


def program(graph: dict[str, Any], input_sets: Sequence[dict[str, str]] | None = None) -> str:
    """One Python program running `graph` on each input set (default: the graph's own inputs);
    prints one JSON line: [{"ok": true, "values": ["9", "18"]} | {"ok": false, "error": "ZeroDivisionError"}, ...]."""
    sets = list(input_sets) if input_sets is not None else [graph["inputs"]]
    fns = graph["functions"]
    names = {fid: f"_f{i}" for i, fid in enumerate(sorted({s["fn"] for s in graph["steps"]}))}
    imports = sorted({imp for fid in names for imp in fns[fid].get("imports", [])})
    lines = [*imports, _RUNTIME]
    for fid, name in names.items():
        lines.append(_renamed_source(fns[fid], name))
        lines.append("")
    lines.append("def _run(inp):")
    lines.append("    s = []")
    for st in graph["steps"]:
        conv = "_exact" if fns[st["fn"]].get("numeric", "exact") == "exact" else "_py"
        args = []
        for a in st["args"]:
            if "step" in a:
                args.append(f"{conv}(s[{int(a['step'])}])")
            elif "input" in a:
                args.append(f"{conv}(Fraction(inp[{a['input']!r}]))")
            else:
                args.append(f"{conv}(Fraction({str(a['literal'])!r}))")
        lines.append(f"    s.append({names[st['fn']]}({', '.join(args)}))")
    lines.append("    return [_text(v) for v in s]")
    lines.append("")
    lines.append(f"_SETS = _json.loads({json.dumps(json.dumps(list(sets)))})")
    lines.append("_out = []")
    lines.append("for _inp in _SETS:")
    lines.append("    try:")
    lines.append("        _out.append({'ok': True, 'values': _run(_inp)})")
    lines.append("    except Exception as _e:")
    lines.append("        _out.append({'ok': False, 'error': type(_e).__name__})")
    lines.append("print(_json.dumps(_out))")
    return "\n".join(lines) + "\n"


def parse_program_output(stdout: str) -> list[dict[str, Any]] | None:
    """The JSON list a `program` printed (its last non-empty line), else None."""
    for line in reversed([ln for ln in (stdout or "").splitlines() if ln.strip()]):
        try:
            out = json.loads(line)
        except json.JSONDecodeError:
            return None
        return out if isinstance(out, list) else None
    return None
