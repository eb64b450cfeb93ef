"""The deterministic decomposer for GSM8K-style solutions with calculator annotations.

A GSM8K solution marks every computation as `<<expr=value>>` ("She buys 3 * 10 = <<3*10=30>>30
pens"). Each annotation becomes one function node: the expression with its numbers turned into
parameters p0, p1, ... (in order of appearance). Data flow is recovered from the values: a number
of a later expression equal to the result of an earlier annotation (the most recent one) is an
edge from that step; any other number is an input of the graph, or, with `constants="question"`,
a literal inside the function when the number does not occur in the question (unit conversions
and words such as "half", "a week", "percent": 2, 7, 100 stay constants of the operation, only
the stated quantities become inputs). The graph is the annotations the answer depends on; it is
kept only if executing it (in the sandbox) reproduces the gold answer (the text after "#### ").
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from rucai.rvsyn.graph import fmt_number, function_id, structure_key, to_number

ANNOTATION = re.compile(r"<<([^<>]*?)=([^<>=]*)>>")
_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**"}

# number words a GSM8K question spells out (values a problem states, not linguistic constants such
# as "half", "twice", "dozen", which stay literals of the operation)
NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30,
    "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100,
    "thousand": 1000,
}
_QNUM = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(?:\s*/\s*(\d+))?(\s*%|\s+percent)?|(?<![\w\d])\.(\d+)")
_WORD = re.compile(r"\b(" + "|".join(NUMBER_WORDS) + r")\b", re.IGNORECASE)

# topic rules for a calculator operation, first match wins (the MATH decomposer tags functions with
# the seed's MATH subject instead)
TOPICS = ("percentages", "powers and roots", "ratios and division", "products and scaling", "sums and differences")


def text_numbers(text: str) -> list[Fraction]:
    """The numbers a text states, in order: numerals ("1,200", "3.5", ".5", "3/4": also 3 and 4),
    with a percent sign also the fraction (150% -> 150 and 1.5), and spelled-out numbers (three)."""
    found: list[tuple[int, Fraction]] = []
    for m in _QNUM.finditer(text):
        if m.group(5) is not None:
            found.append((m.start(), Fraction("0." + m.group(5))))
            continue
        whole = m.group(1).replace(",", "")
        v = Fraction(whole + ("." + m.group(2) if m.group(2) else ""))
        found.append((m.start(), v))
        if m.group(3):
            found.append((m.start(), Fraction(int(m.group(3)))))
            if int(m.group(3)) != 0:
                found.append((m.start(), v / int(m.group(3))))
        if m.group(4):
            found.append((m.start(), v / 100))
    for m in _WORD.finditer(text):
        found.append((m.start(), Fraction(NUMBER_WORDS[m.group(1).lower()])))
    return [v for _, v in sorted(found, key=lambda t: t[0])]


def gold_answer(answer: str) -> str | None:
    """GSM8K's gold: the text after "#### ", thousands separators dropped."""
    if "####" not in answer:
        return None
    return answer.rsplit("####", 1)[1].strip().replace(",", "").replace("$", "") or None


def _clean_expr(expr: str) -> str:
    e = expr.strip().replace("$", "").replace("\u00d7", "*").replace("\u00f7", "/").replace("^", "**")
    e = e.replace("\u2212", "-").replace("x", "*").replace("X", "*")
    e = re.sub(r"(?<=\d),(?=\d{3}\b)", "", e)  # 80,000 -> 80000
    e = re.sub(r"(\d+(?:\.\d+)?)\s*%(?=\s*($|[^\d(.]))", r"(\1/100)", e)  # 20% -> (20/100)
    e = re.sub(r"(?<![\d.])0+(?=\d)", "", e)  # 05 -> 5 (Python rejects leading zeros)
    return e


@dataclass
class Annotation:
    expr: str  # the cleaned expression
    stated: Fraction  # the value written after "="
    sentence: str  # the solution line it came from, the annotation removed
    tree: ast.expr


@dataclass
class Decomposition:
    ok: bool
    reason: str = ""
    graph: dict[str, Any] | None = None
    info: dict[str, Any] = field(default_factory=dict)


def parse_annotations(solution: str) -> tuple[list[Annotation], str | None]:
    """The solution's calculator annotations in order; (annotations, None) or ([], reason)."""
    out: list[Annotation] = []
    for line in solution.splitlines():
        for m in ANNOTATION.finditer(line):
            expr = _clean_expr(m.group(1))
            stated = to_number(m.group(2).strip().replace("$", "").replace("%", "").rstrip("."))
            if stated is None or isinstance(stated, float):
                return [], "unparseable_result"
            try:
                tree = ast.parse(expr, mode="eval").body
            except SyntaxError:
                return [], "unparseable_expression"
            for n in ast.walk(tree):
                if isinstance(n, ast.BinOp) and type(n.op) in _OPS:
                    continue
                if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub | ast.UAdd):
                    continue
                if isinstance(n, ast.Constant) and isinstance(n.value, int | float) and not isinstance(n.value, bool):
                    continue
                if isinstance(n, ast.operator | ast.unaryop):
                    if type(n) in _OPS or isinstance(n, ast.USub | ast.UAdd):
                        continue
                return [], "unsupported_expression"
            sentence = ANNOTATION.sub("", line).strip()
            out.append(Annotation(expr, stated, sentence, tree))
    return out, None


def _constants(tree: ast.expr) -> list[ast.Constant]:
    nodes = [n for n in ast.walk(tree) if isinstance(n, ast.Constant)]
    return sorted(nodes, key=lambda n: (n.lineno, n.col_offset))


def _const_value(expr: str, node: ast.Constant) -> Fraction:
    seg = ast.get_source_segment(expr, node) or repr(node.value)
    v = to_number(seg)
    return v if isinstance(v, Fraction) else Fraction(repr(node.value))


def topic_of(tree: ast.expr, literals: list[Fraction]) -> str:
    ops = {type(n.op) for n in ast.walk(tree) if isinstance(n, ast.BinOp)}
    if (ast.Div in ops and Fraction(100) in literals) or any(0 < v < 1 and v.denominator in (100, 20, 4, 10)
                                                              and ast.Mult in ops for v in literals):
        return "percentages"
    if ast.Pow in ops:
        return "powers and roots"
    if ops & {ast.Div, ast.FloorDiv, ast.Mod}:
        return "ratios and division"
    if ast.Mult in ops:
        return "products and scaling"
    return "sums and differences"


def _slug(topic: str) -> str:
    return re.sub(r"[^a-z]+", "_", topic.lower()).strip("_")


def build_function(tree: ast.expr, expr: str, param_nodes: set[int], topic: str, doc: str) -> dict[str, Any]:
    """The function of one annotation: parameter nodes (by id) become p0, p1, ...; the other numbers
    stay literals (decimals as Fraction('0.5'), so arithmetic on exact inputs stays exact)."""
    counter = iter(range(10**6))

    class _T(ast.NodeTransformer):
        def visit_Constant(self, node: ast.Constant) -> ast.AST:
            if id(node) in param_nodes:
                return ast.Name(id=f"p{next(counter)}", ctx=ast.Load())
            v = _const_value(expr, node)
            if v.denominator == 1:
                return ast.Constant(value=int(v))
            return ast.Call(func=ast.Name(id="Fraction", ctx=ast.Load()), args=[ast.Constant(value=fmt_number(v))],
                            keywords=[])

    # map ids before copying: transform the original tree in place on a parsed copy with same ids
    body = _T().visit(tree)
    n = len(param_nodes)
    params = [f"p{i}" for i in range(n)]
    src = f"def {_slug(topic)}({', '.join(params)}):\n    return {ast.unparse(body)}\n"
    fid = function_id(structure_key(src))
    name = f"{_slug(topic)}_{fid[3:9]}"
    src = f"def {name}({', '.join(params)}):\n    return {ast.unparse(body)}\n"
    return {"id": fid, "name": name, "params": params, "source": src, "topic": topic, "doc": doc,
            "origin": "gsm8k", "imports": [], "numeric": "exact"}


def decompose(question: str, solution: str, constants: str = "question", answer_step: str = "last") -> Decomposition:
    """A seed graph from a GSM8K solution (not yet executed: `Decomposition.graph` holds the steps
    and the gold-candidate answer step; the caller executes it and compares with the gold).

    constants: "question" (numbers absent from the question stay literals) | "all" (every number
    that is no earlier result is an input). answer_step: "last" (the last annotation is the answer) |
    "last_matching" (the last annotation whose stated value equals the gold)."""
    if constants not in ("question", "all"):
        raise ValueError(f"constants={constants!r}: question | all")
    if answer_step not in ("last", "last_matching"):
        raise ValueError(f"answer_step={answer_step!r}: last | last_matching")
    gold = gold_answer(solution)
    gold_v = to_number(gold) if gold is not None else None
    if gold_v is None:
        return Decomposition(False, "no_gold")
    anns, reason = parse_annotations(solution)
    if reason:
        return Decomposition(False, reason)
    # an annotation without an operation (`<<18=18>>`) restates a value: not a step
    anns = [a for a in anns if any(isinstance(n, ast.BinOp | ast.UnaryOp) for n in ast.walk(a.tree))]
    if not anns:
        return Decomposition(False, "no_annotations")
    if answer_step == "last_matching":
        idx = [i for i, a in enumerate(anns) if a.stated == gold_v]
        if not idx:
            return Decomposition(False, "no_annotation_matches_gold")
        anns = anns[: idx[-1] + 1]
    q_numbers = set(text_numbers(question))
    functions: dict[str, dict[str, Any]] = {}
    steps: list[dict[str, Any]] = []
    inputs: dict[str, str] = {}
    flow_edges = 0
    for k, a in enumerate(anns):
        params: set[int] = set()
        args: list[dict[str, Any]] = []
        literals: list[Fraction] = []
        for node in _constants(a.tree):
            v = _const_value(a.expr, node)
            earlier = [j for j in range(k) if anns[j].stated == v]
            if earlier:
                params.add(id(node))
                args.append({"step": earlier[-1]})
                flow_edges += 1
            elif constants == "all" or v in q_numbers:
                params.add(id(node))
                name = f"x{len(inputs)}"
                inputs[name] = fmt_number(v)
                args.append({"input": name})
            else:
                literals.append(v)
        topic = topic_of(a.tree, literals)
        fn = build_function(a.tree, a.expr, params, topic, a.sentence)
        functions.setdefault(fn["id"], fn)
        steps.append({"fn": fn["id"], "args": args, "stated": fmt_number(a.stated)})
    from rucai.rvsyn.graph import ancestors_only

    graph = ancestors_only({"inputs": inputs, "steps": steps, "functions": functions})
    return Decomposition(True, "", graph, {"annotations": len(anns), "steps": len(graph["steps"]),
                                           "pruned_steps": len(anns) - len(graph["steps"]),
                                           "flow_edges": flow_edges, "gold": fmt_number(gold_v)})
