"""Step 5 of RV-Syn: back-translate an executed graph into a problem, and write its step-by-step
solution from the graph.

Quantities: the value of step k is named by a capital letter (A, B, ..., Z, AA, ...), so no digit
appears in a problem but the numbers it states.

  template  deterministic and always applicable. A one-line arithmetic function is read out from its
            AST ("16 minus 3 minus 4", "the product of A and 2", "A divided by 100"); any other
            function by its name and docstring with its arguments ("the result of 'area of circle'
            with radius = 3"). The problem names its topics, defines every quantity in order and asks
            for the last one; every input value appears in it, as does every constant of a function.
  llm       solution-guided: the model gets the topics, the given numbers and the solution steps
            with their values, and writes a word problem whose solution is exactly that
            computation (it must state every given number and neither an intermediate result nor
            the answer; the verify stage checks the numbers).

`reparse_inputs` reads the numbers back out of a template problem, in the order the template writes
them, and returns the input set they define: the verify stage re-executes the graph on it.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from typing import Any

from rucai.rvsyn.graph import arithmetic_body, fmt_number, literal_value, to_number

_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:/\d+)?(?![\w.]\d)")


def letter(k: int) -> str:
    s = ""
    k += 1
    while k:
        k, r = divmod(k - 1, 26)
        s = chr(65 + r) + s
    return s


def _flatten(node: ast.expr, op: type) -> list[ast.expr]:
    if isinstance(node, ast.BinOp) and isinstance(node.op, op):
        return _flatten(node.left, op) + [node.right]
    return [node]


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def verbalize(node: ast.expr, name: Callable[[str], str], top: bool = True) -> str:
    """Words for an arithmetic expression over parameters (`name(param)` gives a parameter's words);
    a compound operand is put in parentheses, so "(the product of 125 and 2) minus 2" reads one way."""
    if isinstance(node, ast.Name):
        return name(node.id)
    v = literal_value(node)
    if v is not None:
        return fmt_number(v)
    if isinstance(node, ast.UnaryOp):
        inner = verbalize(node.operand, name, False)
        text = inner if isinstance(node.op, ast.UAdd) else f"the negative of {inner}"
    elif isinstance(node, ast.BinOp):
        op = type(node.op)
        if op is ast.Add:
            text = "the sum of " + _join([verbalize(x, name, False) for x in _flatten(node, ast.Add)])
        elif op is ast.Mult:
            text = "the product of " + _join([verbalize(x, name, False) for x in _flatten(node, ast.Mult)])
        elif op is ast.Sub:
            text = " minus ".join(verbalize(x, name, False) for x in _flatten(node, ast.Sub))
        else:
            left, right = verbalize(node.left, name, False), verbalize(node.right, name, False)
            text = {ast.Div: f"{left} divided by {right}", ast.FloorDiv: f"the whole part of {left} divided by {right}",
                    ast.Mod: f"the remainder of {left} divided by {right}",
                    ast.Pow: f"{left} raised to the power {right}"}.get(op)
            if text is None:
                raise ValueError(f"cannot verbalize {ast.dump(node)}")
    else:
        raise ValueError(f"cannot verbalize {ast.dump(node)}")
    return text if top else f"({text})"


def _scrub(text: str) -> str:
    """A docstring without digits (the problem's only digits are its numbers)."""
    return re.sub(r"\s+", " ", re.sub(r"\d", "", text)).strip()


def _arg_words(graph: dict[str, Any], st: dict[str, Any], values: dict[str, str]) -> list[str]:
    out = []
    for a in st["args"]:
        if "step" in a:
            out.append(letter(a["step"]))
        elif "input" in a:
            out.append(values[a["input"]])
        else:
            out.append(str(a["literal"]))
    return out


def step_phrase(graph: dict[str, Any], k: int, values: dict[str, str]) -> str:
    """What step k computes, in words, with the inputs' values and earlier quantities' letters."""
    st = graph["steps"][k]
    fn = graph["functions"][st["fn"]]
    words = dict(zip(fn["params"], _arg_words(graph, st, values), strict=True))
    expr = arithmetic_body(fn)
    if expr is not None:
        try:
            return verbalize(expr, lambda p: words[p])
        except (ValueError, KeyError):
            pass
    label = _scrub(fn.get("doc") or "").rstrip(".") or _scrub(fn["name"].replace("_", " "))
    args = _join([f"{_scrub(p.replace('_', ' ')) or 'input'} = {w}" for p, w in words.items()]) if words else "no arguments"
    return f"the result of \"{label}\" with {args}"


def template_problem(graph: dict[str, Any], inputs: dict[str, str] | None = None) -> str:
    values = inputs if inputs is not None else graph["inputs"]
    tops = sorted({graph["functions"][s["fn"]]["topic"] for s in graph["steps"]})
    lines = [f"Topics: {'; '.join(tops)}."]
    n = len(graph["steps"])
    for k in range(n):
        lines.append(f"Quantity {letter(k)} is {step_phrase(graph, k, values)}.")
    lines.append(f"What is the value of quantity {letter(n - 1)}?")
    return " ".join(lines)


def _expr_text(graph: dict[str, Any], k: int, values: dict[str, str], step_values: list[str]) -> str:
    st = graph["steps"][k]
    fn = graph["functions"][st["fn"]]
    shown = []
    for a in st["args"]:
        if "step" in a:
            shown.append(fmt_number(to_number(step_values[a["step"]])))
        elif "input" in a:
            shown.append(values[a["input"]])
        else:
            shown.append(str(a["literal"]))
    expr = arithmetic_body(fn)
    if expr is not None:
        sub = dict(zip(fn["params"], shown, strict=True))

        class _S(ast.NodeTransformer):
            def visit_Name(self, node: ast.Name) -> ast.AST:
                return ast.Name(id=sub.get(node.id, node.id), ctx=node.ctx)

            def visit_Call(self, node: ast.Call) -> ast.AST:
                v = literal_value(node)
                return ast.Name(id=fmt_number(v), ctx=ast.Load()) if v is not None else node

        text = ast.unparse(_S().visit(ast.parse(ast.unparse(expr), mode="eval").body))
        return text.replace("**", "^").replace("*", "×").replace("//", " div ").replace("/", "÷")
    return f"{fn['name']}({', '.join(f'{p}={v}' for p, v in zip(fn['params'], shown, strict=True))})"


def solution_text(graph: dict[str, Any], step_values: list[str], inputs: dict[str, str] | None = None) -> str:
    """The step-by-step solution: one line per step with its computation and value, then the answer
    in \\boxed{} (the project's math checker reads it)."""
    values = inputs if inputs is not None else graph["inputs"]
    lines = []
    for k in range(len(graph["steps"])):
        v = fmt_number(to_number(step_values[k]))
        lines.append(f"Step {k + 1}: {letter(k)} = {_expr_text(graph, k, values, step_values)} = {v}.")
    ans = fmt_number(to_number(step_values[-1]))
    lines.append(f"The answer is $\\boxed{{{ans}}}$.")
    return "\n".join(lines)


def number_slots(graph: dict[str, Any]) -> list[tuple[str, str | None]]:
    """The numbers a template problem writes, in order: ("input", name) for an input, ("literal",
    value) for a constant of a function. Found by writing the problem with a sentinel per input."""
    sentinel = {x: f"@{i}@" for i, x in enumerate(graph["inputs"])}
    text = template_problem(graph, {x: s for x, s in sentinel.items()})
    back = {s: x for x, s in sentinel.items()}
    out: list[tuple[str, str | None]] = []
    for m in re.finditer(r"@\d+@|" + _NUMBER.pattern, text):
        tok = m.group(0)
        out.append(("input", back[tok]) if tok in back else ("literal", tok))
    return out


def reparse_inputs(graph: dict[str, Any], problem: str) -> dict[str, str] | None:
    """The input set a template problem states (numbers read in order); None when the problem's
    numbers do not line up with the graph (a literal differs, a number is missing or extra)."""
    slots = number_slots(graph)
    found = _NUMBER.findall(problem)
    if len(found) != len(slots):
        return None
    inputs: dict[str, str] = {}
    for (kind, ref), tok in zip(slots, found, strict=True):
        if kind == "literal":
            if to_number(tok) != to_number(ref):
                return None
        else:
            if ref in inputs and to_number(inputs[ref]) != to_number(tok):
                return None
            inputs[str(ref)] = tok
    return inputs if set(inputs) == set(graph["inputs"]) else None


def mentions_inputs(problem: str, inputs: dict[str, str]) -> list[str]:
    """The input values a problem does not state (numerals, or spelled-out numbers up to 20 and tens)."""
    from rucai.rvsyn.gsm8k import text_numbers

    stated = set(text_numbers(problem)) | {to_number(t) for t in _NUMBER.findall(problem)}
    return [v for v in inputs.values() if to_number(v) not in stated]


def answer_leaked(graph: dict[str, Any], problem: str, inputs: dict[str, str], answer: str) -> bool:
    """True when a problem states its answer: the answer's number is in the text but is none of the
    numbers the computation itself states (its inputs and its functions' constants)."""
    from rucai.rvsyn.gsm8k import text_numbers

    def stated(text: str) -> set[Any]:
        return set(text_numbers(text)) | {to_number(t) for t in _NUMBER.findall(text)}

    a = to_number(answer)
    return a in stated(problem) and a not in stated(template_problem(graph, inputs))


# ----------------------------------------------------------------------------------------------- llm

BACKTRANSLATE_PROMPT = """Write a math word problem whose solution is exactly the computation below.
State every given number in the problem. Do not state any intermediate result or the final answer. \
End with one question that asks for the final result. Reply with the problem only.

Topics: {topics}
Given numbers: {numbers}
Solution:
{solution}

Problem:"""


def llm_prompt(graph: dict[str, Any], step_values: list[str], inputs: dict[str, str]) -> list[dict[str, str]]:
    tops = sorted({graph["functions"][s["fn"]]["topic"] for s in graph["steps"]})
    sol = solution_text(graph, step_values, inputs).rsplit("\n", 1)[0]
    return [{"role": "user", "content": BACKTRANSLATE_PROMPT.format(
        topics=", ".join(tops), numbers=", ".join(inputs.values()) or "none", solution=sol)}]


def clean_llm_problem(text: str) -> str:
    """The problem of a model reply: a leading "Problem:" dropped, cut at a "Solution"/"Answer" header."""
    t = text.strip()
    t = re.sub(r"^\s*(\*\*)?problem(\*\*)?\s*:\s*", "", t, flags=re.IGNORECASE)
    t = re.split(r"\n\s*(\*\*)?(solution|answer|step 1)\b", t, maxsplit=1, flags=re.IGNORECASE)[0]
    return t.strip()
