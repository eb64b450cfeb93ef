"""RV-Syn on hand cases: the GSM8K decomposer (gold rebuilt, data-flow edges checked by hand), the
library's merges, composition's depth/width/topic options, execution (answers and step-by-step
solutions equal the sandbox's execution), the template back-translator, the LLM decomposer's
parser (a stub model), and stage resumption after a crash. Programs run in the project's sandbox."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest

from rucai.rvsyn import backtranslate as bt
from rucai.rvsyn import graph as G
from rucai.rvsyn.compose import Composer
from rucai.rvsyn.decompose import GSM8KDecomposer, LLMDecomposer, Seed, read_decomposition, verify_proposals
from rucai.rvsyn.execute import execute_graphs
from rucai.rvsyn.gsm8k import decompose, gold_answer, text_numbers
from rucai.rvsyn.library import build_library
from tests.conftest import DATA_DIR, compose_config, needs_data


@pytest.fixture(scope="module")
def sandbox():
    from rucai import sandbox as sb

    try:
        sb.isolation()
    except sb.SandboxUnavailable as e:
        pytest.skip(f"the sandbox cannot run here: {e}")
    return sb


def run1(graph, inputs=None):
    """The step values of one graph execution in the sandbox."""
    (status, res), = execute_graphs([graph], [[inputs]] if inputs is not None else None)
    assert status == "ok" and res[0]["ok"], (status, res)
    return res[0]["values"]


# ------------------------------------------------------------------------------------------ numbers


def test_numbers_by_hand():
    assert G.fmt_number(Fraction(18)) == "18" and G.fmt_number(Fraction(5, 2)) == "2.5"
    assert G.fmt_number(Fraction(-1, 8)) == "-0.125" and G.fmt_number(Fraction(10, 3)) == "10/3"
    assert G.fmt_number(Fraction(1, 20)) == "0.05"
    assert G.to_number("1,200") == 1200 and G.to_number("3/4") == Fraction(3, 4) and G.to_number(".5") == Fraction(1, 2)
    assert G.to_number("abc") is None and G.to_number("inf") is None
    assert G.numbers_equal("18.0", "18") and not G.numbers_equal("18.5", "18")
    assert text_numbers("Ana has 1,200 pens, three boxes and 150% more; 3/4 of them") == [
        1200, 3, 150, Fraction(3, 2), 3, 4, Fraction(3, 4)]
    assert gold_answer("blah\n#### 1,000") == "1000"


# ------------------------------------------------------------------------------------- gsm8k decomposer

Q1 = "Ana has 5 pens and buys 3 boxes of 10 pens. How many pens does she have?"
A1 = "She buys 3 * 10 = <<3*10=30>>30 pens.\nShe has 5 + 30 = <<5+30=35>>35 pens.\n#### 35"

# 100 and 2 are not in the question: constants of their operations; the first annotation feeds the
# third twice removed (through the second); "6" restates nothing and is a dead end
Q2 = "A coat costs $80 and is 25% off. Tom buys 2 coats and pays a $6 fee. What does he pay?"
A2 = ("The discount is 80 * 25 / 100 = <<80*25/100=20>>20 dollars.\n"
      "One coat costs 80 - 20 = <<80-20=60>>60 dollars.\n"
      "The fee doubled would be 6 * 2 = <<6*2=12>>12 dollars.\n"
      "Two coats cost 60 * 2 = <<60*2=120>>120, plus the fee: 120 + 6 = <<120+6=126>>126.\n#### 126")


def test_gsm8k_decomposer_rebuilds_the_gold_and_the_edges(sandbox):
    d = decompose(Q1, A1)
    assert d.ok and d.info["gold"] == "35"
    g = d.graph
    assert g["inputs"] == {"x0": "3", "x1": "10", "x2": "5"}
    assert [s["args"] for s in g["steps"]] == [[{"input": "x0"}, {"input": "x1"}], [{"input": "x2"}, {"step": 0}]]
    f0, f1 = (g["functions"][s["fn"]] for s in g["steps"])
    assert "return p0 * p1" in f0["source"] and "return p0 + p1" in f1["source"]
    assert run1(g) == ["30", "35"]

    d = decompose(Q2, A2)
    g = d.graph
    assert d.info["pruned_steps"] == 1  # 6 * 2 feeds nothing
    assert len(g["steps"]) == 4 and G.depth(g) == 4
    # edges by hand: discount -> coat price (slot 1), coat price -> two coats (slot 0), two coats -> total (slot 0)
    assert [s["args"] for s in g["steps"]] == [
        [{"input": "x0"}, {"input": "x1"}], [{"input": "x2"}, {"step": 0}],
        [{"step": 1}, {"input": "x3"}], [{"step": 2}, {"input": "x4"}]]
    assert g["inputs"] == {"x0": "80", "x1": "25", "x2": "80", "x3": "2", "x4": "6"}
    assert "return p0 * p1 / 100" in g["functions"][g["steps"][0]["fn"]]["source"]  # 100: a literal
    assert g["functions"][g["steps"][0]["fn"]]["topic"] == "percentages"
    assert run1(g) == ["20", "60", "120", "126"]
    # every number an input (constants="all"): 100 becomes a parameter
    g_all = decompose(Q2, A2, constants="all").graph
    assert len(g_all["functions"][g_all["steps"][0]["fn"]]["params"]) == 3


def test_gsm8k_keeps_only_graphs_that_reproduce_the_gold(sandbox, tmp_path):
    bad = A1.replace("#### 35", "#### 36")
    odd = "She has <<2+y=5>>5.\n#### 5"
    rows = [{"question": Q1, "answer": A1, "idx": 0}, {"question": Q1, "answer": bad, "idx": 1},
            {"question": Q2, "answer": A2, "idx": 2}, {"question": Q1, "answer": odd, "idx": 3},
            {"question": Q1, "answer": "no annotation\n#### 3", "idx": 4}]
    path = tmp_path / "gsm.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dec = GSM8KDecomposer(str(path))
    seeds = dec.load_seeds()
    out = verify_proposals(dec, seeds, dec.propose(seeds))
    assert [r["status"] for r in out] == ["kept", "wrong_answer", "kept", "unsupported_expression", "no_annotations"]
    assert out[0]["graph"]["values"] == ["30", "35"] and out[1]["answer"] == "35"


@needs_data("math", "gsm8k_test.jsonl")
def test_gsm8k_yield_on_real_seeds(sandbox):
    dec = GSM8KDecomposer(str(DATA_DIR / "math" / "gsm8k_test.jsonl"), max_seeds=200)
    seeds = dec.load_seeds()
    rows = verify_proposals(dec, seeds, dec.propose(seeds))
    kept = sum(r["status"] == "kept" for r in rows)
    assert kept / len(rows) >= 0.85  # ~91% of GSM8K test solutions end on an annotation equal to the gold


# ------------------------------------------------------------------------------------------ library


def _fn(src: str, topic: str = "t", origin: str = "gsm8k") -> dict:
    node = G.parse_function(src)
    fid = G.function_id(G.structure_key(src))
    return {"id": fid, "name": node.name, "params": [a.arg for a in node.args.args], "source": src, "topic": topic,
            "doc": "", "origin": origin, "imports": [], "numeric": "exact"}


def _graph(fns: list[dict], steps: list[list[dict]], inputs: dict[str, str]) -> dict:
    return {"inputs": inputs, "steps": [{"fn": f["id"], "args": a} for f, a in zip(fns, steps, strict=True)],
            "functions": {f["id"]: f for f in fns}}


def test_structure_key_ignores_names_and_docstrings():
    a = "def cost(price, count):\n    '''Total cost.'''\n    total = price * count\n    return total\n"
    b = "def f(x, y):\n    z = x * y\n    return z\n"
    c = "def f(x, y):\n    z = y * x\n    return z\n"
    assert G.structure_key(a) == G.structure_key(b) != G.structure_key(c)


def test_library_merges_duplicates_by_structure_and_meaning(sandbox):
    mul = _fn("def a(x, y):\n    return x * y\n")
    mul2 = _fn("def b(p, q):\n    return p * q\n")  # renamed parameters: the same structure
    mul_sw = _fn("def c(p, q):\n    return q * p\n")  # same meaning, other structure
    sub = _fn("def d(x, y):\n    return x - y\n")
    sub_rev = _fn("def e(x, y):\n    return -y + x\n")  # = x - y
    rsub = _fn("def g(x, y):\n    return y - x\n")  # = sub with swapped parameters
    add = _fn("def h(x, y):\n    return x + y\n")  # not the same as anything above
    graphs = [_graph([mul], [[{"input": "x0"}, {"input": "x1"}]], {"x0": "2", "x1": "3"}),
              _graph([mul2, sub], [[{"input": "x0"}, {"input": "x1"}], [{"step": 0}, {"input": "x2"}]],
                     {"x0": "4", "x1": "5", "x2": "1"}),
              _graph([mul_sw, sub_rev, rsub, add],
                     [[{"input": "x0"}, {"input": "x1"}], [{"step": 0}, {"input": "x2"}],
                      [{"input": "x3"}, {"step": 1}], [{"step": 2}, {"input": "x4"}]],
                     {"x0": "6", "x1": "7", "x2": "2", "x3": "10", "x4": "1"})]
    off = build_library(graphs, meaning=False)
    assert off["stats"]["functions_before_merge"] == 7
    assert off["stats"]["after_structure_merge"] == 6  # only mul and mul2 share a structure
    assert len(off["functions"]) == 6 and not off["stats"]["meaning_merge"]["used"]
    none = build_library(graphs, structure_merge=False, meaning=False)
    assert len(none["functions"]) == 7

    lib = build_library(graphs, meaning=True, embed=lambda texts: [[1.0, 0.0]] * len(texts), threshold=0.5)
    mm = lib["stats"]["meaning_merge"]
    assert mm["used"] and lib["stats"]["after_meaning_merge"] == 3  # {mul}, {sub, sub_rev, rsub}, {add}
    srcs = sorted(f["source"].split("\n")[1].strip() for f in lib["functions"].values())
    assert srcs == ["return x * y", "return x + y", "return x - y"]
    # the seed graph that used y - x is re-wired through the permutation and computes the same values
    assert [run1(g) for g in lib["seed_graphs"]] == [["6"], ["20", "19"], ["42", "40", "30", "31"]]
    sub_id = next(f for f in lib["functions"] if "x - y" in lib["functions"][f]["source"])
    assert lib["seed_graphs"][2]["steps"][2] == {"fn": sub_id, "args": [{"step": 1}, {"input": "x3"}]}
    # observed inputs per parameter after the re-wiring: sub's slot 0 saw nothing but flows, slot 1 saw 1, 2 and 10
    assert lib["functions"][sub_id]["ranges"][1]["values"] == ["1", "2", "10"]
    # data-flow edges: mul -> sub (slot 0) twice, sub -> sub (slot 0) once, sub -> add (slot 0) once
    edges = {(e["src"][:6], e["dst"], e["slot"]): e["count"] for e in lib["edges"]}
    assert sum(edges.values()) == 4 and lib["stats"]["flow_edges"] == 3


# ------------------------------------------------------------------------------------------ compose


def _toy_library() -> dict:
    add = _fn("def add(a, b):\n    return a + b\n", topic="sums and differences")
    sub = _fn("def sub(a, b):\n    return a - b\n", topic="sums and differences")
    mul = _fn("def mul(a, b):\n    return a * b\n", topic="products and scaling")
    dbl = _fn("def dbl(a):\n    return a * 2\n", topic="products and scaling")
    seeds = [_graph([add, mul], [[{"input": "x0"}, {"input": "x1"}], [{"step": 0}, {"input": "x2"}]],
                    {"x0": "3", "x1": "4", "x2": "5"}),
             _graph([mul, sub, dbl], [[{"input": "x0"}, {"input": "x1"}], [{"step": 0}, {"input": "x2"}], [{"step": 1}]],
                    {"x0": "6", "x1": "7", "x2": "2"}),
             _graph([dbl, add], [[{"input": "x0"}], [{"input": "x1"}, {"step": 0}]], {"x0": "8", "x1": "1"})]
    return build_library(seeds, meaning=False)


def test_compose_respects_depth_width_and_topics():
    lib = _toy_library()
    chain = Composer(lib, min_depth=3, max_depth=3, min_ops=3, max_ops=3, max_width=1)
    for i in range(30):
        g, why = chain.compose(i, seed=0)
        assert g is not None, why
        assert G.depth(g) == 3 and G.width(g) == 1 and len(g["steps"]) == 3
    wide = Composer(lib, min_depth=2, max_depth=3, min_ops=2, max_ops=6, max_width=2)
    for i in range(30):
        g, _ = wide.compose(i, seed=1)
        assert 2 <= G.depth(g) <= 3 and G.width(g) <= 2 and 2 <= len(g["steps"]) <= 6
        # inputs: every free parameter, drawn between observed values (ints here)
        assert all(G.to_number(v).denominator == 1 for s in g["input_sets"] for v in s.values())
    only = Composer(lib, min_depth=1, max_depth=3, min_ops=1, max_ops=4, topics=["sums and differences"])
    one = Composer(lib, min_depth=2, max_depth=3, min_ops=2, max_ops=4, max_topics=1)
    for i in range(30):
        g, _ = only.compose(i, seed=2)
        assert G.topics(g) == ["sums and differences"]
        g, _ = one.compose(i, seed=3)
        assert g is None or len(G.topics(g)) == 1
    assert chain.compose(7, seed=0) == chain.compose(7, seed=0)  # a candidate depends on (seed, index) only


def test_composed_answer_equals_execution_and_solution(sandbox):
    lib = _toy_library()
    comp = Composer(lib, min_depth=2, max_depth=4, min_ops=2, max_ops=5, max_width=2, input_draws=1)
    graphs = [comp.compose(i, seed=5)[0] for i in range(12)]
    for g, (status, res) in zip(graphs, execute_graphs(graphs), strict=True):
        assert status == "ok"
        values = res[0]["values"]
        # the answer by hand: evaluate each step from the functions' arithmetic on the host
        host: list[Fraction] = []
        for st in g["steps"]:
            src = g["functions"][st["fn"]]["source"]
            a = [host[x["step"]] if "step" in x else Fraction(g["inputs"][x["input"]]) for x in st["args"]]
            if "a + b" in src:
                host.append(a[0] + a[1])
            elif "a - b" in src:
                host.append(a[0] - a[1])
            elif "a * b" in src:
                host.append(a[0] * a[1])
            else:
                assert "a * 2" in src
                host.append(a[0] * 2)
        assert [Fraction(v) for v in values] == host
        sol = bt.solution_text(g, values)
        from rucai.eval.math import extract_answer

        assert G.numbers_equal(extract_answer(sol), values[-1])
        assert sol.count("Step ") == len(g["steps"])


def test_hand_graph_and_its_template_problem(sandbox):
    g = decompose(Q1, A1).graph
    values = run1(g)
    problem = bt.template_problem(g)
    assert problem == ("Topics: products and scaling; sums and differences. Quantity A is the product of 3 and 10. "
                       "Quantity B is the sum of 5 and A. What is the value of quantity B?")
    assert bt.solution_text(g, values) == ("Step 1: A = 3 × 10 = 30.\nStep 2: B = 5 + 30 = 35.\n"
                                            "The answer is $\\boxed{35}$.")
    assert bt.reparse_inputs(g, problem) == g["inputs"]
    other = {"x0": "4", "x1": "2.5", "x2": "7"}
    assert bt.reparse_inputs(g, bt.template_problem(g, other)) == other
    assert run1(g, other) == ["10", "17"]


def test_template_mentions_every_input_value():
    lib = _toy_library()
    comp = Composer(lib, min_depth=1, max_depth=4, min_ops=1, max_ops=6, max_width=3)
    llm_fn = {"id": "fn_x", "name": "area2", "params": ["radius1", "h"], "topic": "Geometry", "origin": "llm",
              "source": "def area2(radius1, h):\n    '''Area of 2 circles.'''\n    import math\n    return 2 * h * radius1\n",
              "doc": "Area of 2 circles.", "imports": [], "numeric": "python"}
    graphs = [comp.compose(i, seed=9)[0] for i in range(40)]
    graphs.append({"inputs": {"x0": "3", "x1": "12.5"}, "steps": [{"fn": "fn_x", "args": [{"input": "x0"}, {"input": "x1"}]}],
                   "functions": {"fn_x": llm_fn}})
    for g in graphs:
        p = bt.template_problem(g)
        assert bt.mentions_inputs(p, g["inputs"]) == []
        assert bt.reparse_inputs(g, p) == g["inputs"]
    assert "with radius = 3 and h = 12.5" in bt.template_problem(graphs[-1])  # digits scrubbed from names/docs


def test_answer_leak_check():
    g = decompose(Q1, A1).graph
    assert not bt.answer_leaked(g, bt.template_problem(g), g["inputs"], "35")
    assert bt.answer_leaked(g, "Ana has 5 pens, buys 3 boxes of 10; she has 35 pens.", g["inputs"], "35")
    # an answer that equals an input is no leak
    assert not bt.answer_leaked(g, "Ana has 5 pens and 3 boxes of 10.", g["inputs"], "5")
    assert bt.mentions_inputs("Ana has five pens and 3 boxes.", g["inputs"]) == ["10"]


# ---------------------------------------------------------------------------------------- llm decomposer

GOOD = '''Here is the code.
```python
def add(a, b):
    """Sum."""
    return a + b

def times(x, k):
    """Scale x by k."""
    return x * k

def solution():
    s = add(41, 19)
    return times(s, k=3)
```'''


class _StubLLM:
    def __init__(self, replies):
        self.replies = replies

    def generate(self, prompts, sampling=None):
        from rucai.llm.base import Completion, RequestOutput

        return [RequestOutput(i, 0, [Completion(self.replies[i], 1, "stop")]) for i in range(len(prompts))]


def test_llm_decomposer_parses_runs_and_checks_the_gold(sandbox, tmp_path):
    import ast

    g, why = read_decomposition(ast.parse(G_code := GOOD.split("```python\n")[1].split("```")[0]), "Algebra")
    assert why == "" and G_code
    assert g["inputs"] == {"x0": "41", "x1": "19", "x2": "3"}
    assert [s["args"] for s in g["steps"]] == [[{"input": "x0"}, {"input": "x1"}], [{"step": 0}, {"input": "x2"}]]
    assert run1(g) == ["60", "180"]
    loop = "def f(a):\n    return a\n\ndef solution():\n    t = 0\n    for i in range(3):\n        t = f(t)\n    return t\n"
    assert read_decomposition(ast.parse(loop), "x") == (None, "not_straight_line")
    # inline arithmetic (what a small model writes) is lifted into one function per expression; a
    # number the problem does not state (60: minutes per hour) stays a constant of its operation
    inline = "def solution():\n    left = 47 + 49\n    return left * 3 / 60\n"
    assert read_decomposition(ast.parse(inline), "x") == (None, "no_operation_functions")
    g, why = read_decomposition(ast.parse(inline), "Algebra", lift_inline=True, stated={Fraction(47), Fraction(49), Fraction(3)})
    assert why == "" and g["inputs"] == {"x0": "47", "x1": "49", "x2": "3"}
    assert [g["functions"][s["fn"]]["source"].split("\n")[1].strip() for s in g["steps"]] == [
        "return p0 + p1", "return p0 * p1 / 60"]
    assert run1(g) == ["96", "4.8"]

    rows = [{"problem": "Compute $(41+19)\\times 3$.", "solution": "$60 \\times 3 = \\boxed{180}$.", "type": "Algebra"},
            {"problem": "P2", "solution": "\\boxed{7}", "type": "Algebra"},
            {"problem": "P3", "solution": "\\boxed{1}", "type": "Algebra"},
            {"problem": "P4", "solution": "\\boxed{1}", "type": "Algebra"},
            {"problem": "in MATH-500", "solution": "\\boxed{1}", "type": "Algebra"}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "ex.jsonl").write_text(json.dumps({"problem": "in MATH-500"}) + "\n")
    replies = [GOOD, GOOD, "no code at all (((", "def broken(:\n  return"]
    dec = LLMDecomposer(str(tmp_path / "m.jsonl"), str(tmp_path / "ex.jsonl"), None, lambda: _StubLLM(replies),
                        64, 0.0, 0, 5.0, 512)
    seeds = dec.load_seeds()
    assert [s.id for s in seeds] == ["math-0", "math-1", "math-2", "math-3"] and seeds[0].gold == "180"
    out = verify_proposals(dec, seeds, dec.propose(seeds))
    assert [r["status"] for r in out] == ["kept", "wrong_answer", "no_code", "syntax_error"]
    assert out[0]["graph"]["functions"][out[0]["graph"]["steps"][0]["fn"]]["topic"] == "Algebra"


def test_seed_dataclass_defaults():
    assert Seed("a", "p", "s", "1").topic is None


# ------------------------------------------------------------------------------------- stages / resume

GSM_ROWS = [
    {"question": Q1, "answer": A1},
    {"question": Q2, "answer": A2},
    {"question": "Bo has 12 apples and eats 4. He splits the rest among 2 friends. How many does each get?",
     "answer": "He has 12 - 4 = <<12-4=8>>8 left.\nEach gets 8 / 2 = <<8/2=4>>4.\n#### 4"},
    {"question": "A box holds 6 eggs. Mia buys 7 boxes and breaks 5 eggs. How many are whole?",
     "answer": "She buys 6 * 7 = <<6*7=42>>42 eggs.\n42 - 5 = <<42-5=37>>37 are whole.\n#### 37"},
    {"question": "Leo reads 15 pages a day for 4 days and then 9 pages. How many pages?",
     "answer": "15 * 4 = <<15*4=60>>60 pages.\n60 + 9 = <<60+9=69>>69 pages.\n#### 69"},
]


def _cfg(tmp_path: Path, out: str):
    data = tmp_path / "gsm.jsonl"
    if not data.is_file():
        data.write_text("".join(json.dumps(r | {"idx": i}) + "\n" for i, r in enumerate(GSM_ROWS)))
    return compose_config("experiment=rvsyn/gsm8k_cpu", f"paths.output_dir={tmp_path / out}",
                          f"method.decompose.gsm8k.path={data}", "method.library.meaning_merge=false",
                          "method.compose.num_graphs=12", "method.compose.min_depth=2",
                          "method.compose.min_ops=2", "method.chunk_size=3", "method.verify.reexecute_sample=5")


def test_stages_resume_after_a_crash(sandbox, tmp_path, monkeypatch):
    from rucai.rvsyn import pipeline as P

    full = P.synthesize(P.Context(_cfg(tmp_path, "full")))
    assert full["export"]["items"] > 0

    class Crash(RuntimeError):
        pass

    def crash_after(stage, limit):
        def hook(name, n):
            if name == stage and n >= limit:
                raise Crash(f"{name} after {n}")
        return hook

    ctx = P.Context(_cfg(tmp_path, "crashy"))
    for stage in ("compose", "execute", "verify"):
        monkeypatch.setattr(P, "AFTER_CHUNK", crash_after(stage, 3))
        with pytest.raises(Crash):
            P.synthesize(ctx)
        assert not (ctx.root / stage / "done.json").exists()
    # a crash in the middle of a write: a torn last line
    with open(ctx.root / "verify" / "verified.jsonl", "a") as f:
        f.write('{"id": "g0000')
    monkeypatch.setattr(P, "AFTER_CHUNK", None)
    P.synthesize(ctx)
    for stage, name, key in (("compose", "candidates.jsonl", "index"), ("execute", "executed.jsonl", "id"),
                             ("verify", "verified.jsonl", "id")):
        rows = P.read_rows(ctx.root / stage / name)
        assert len(rows) == len({r[key] for r in rows}), f"{stage}: duplicates after the resume"
    for stage, name in (("compose", "candidates.jsonl"), ("execute", "executed.jsonl"),
                        ("backtranslate", "problems.jsonl"), ("export", "sft.jsonl")):
        a = P.read_rows(tmp_path / "full" / stage / name)
        b = P.read_rows(ctx.root / stage / name)
        key = "index" if stage == "compose" else "id"
        assert sorted(a, key=lambda r: r[key]) == sorted(b, key=lambda r: r[key]), stage
    stats = json.loads((ctx.root / "verify" / "stats.json").read_text())
    assert stats["reexecution"]["sampled"] > 0 and stats["reexecution"].get("agrees") == stats["reexecution"]["sampled"]
    dec = json.loads((ctx.root / "decompose" / "stats.json").read_text())["gsm8k"]
    assert dec == json.loads((tmp_path / "full" / "decompose" / "stats.json").read_text())["gsm8k"]
    assert dec["seeds"] == 5 and dec["kept"] == 5


def test_value_checks():
    from rucai.rvsyn.pipeline import check_values

    assert check_values(["3", "6"], "answer", True, 1e6) == ""
    assert check_values(["3/2", "6"], "answer", True, 1e6) == ""
    assert check_values(["3/2", "6"], "all", True, 1e6) == "non_integer_value"
    assert check_values(["3", "13/2"], "answer", True, 1e6) == "non_integer_answer"
    assert check_values(["-3", "6"], "none", True, 1e6) == "negative"
    assert check_values(["3", "6e9"], "none", False, 1e6) == "too_large"


def test_sft_task_wiring_on_cpu_with_a_tiny_model(sandbox, tmp_path, tiny_data_dir):
    """The GPU experiment's task on CPU (needs_gpu off, a tiny random model): synthesis -> SFT stage ->
    a plain HF folder -> math_eval of it; without a GPU the experiment itself stops in one line."""
    from rucai.llm.models import save_tiny_causal_lm
    from rucai.rvsyn.tasks import PLAIN_TEMPLATE, sft_examples
    from tests.conftest import run_cli

    model = save_tiny_causal_lm(tmp_path / "tiny")
    r = run_cli("experiment=rvsyn/sft_llama3_8b", "debug=smoke", "hardware=cpu", "method.needs_gpu=false", "llm=hf",
                f"llm.model={model}", f"method.sft.model={model}", "method.sft.dtype=float32",
                f"paths.data_dir={tiny_data_dir}", run_dir=tmp_path / "run", env={"RUCAI_DATA_DIR": str(tiny_data_dir)})
    assert r.returncode == 0, r.stderr[-3000:]
    m = r.metrics()
    assert m["sft/examples"] > 0 and 0.0 <= m["eval/pass@1"] <= 1.0
    assert (tmp_path / "run" / "sft" / "model" / "config.json").is_file()
    assert (tmp_path / "run" / "eval" / "samples.jsonl").is_file()
    ex = sft_examples([{"problem": "P?", "solution": "S."}], "Do it.\n\n")
    assert ex == [([{"role": "user", "content": "Do it.\n\nP?"}], "S.")]
    assert "Question:" in PLAIN_TEMPLATE and "eos_token" in PLAIN_TEMPLATE


def test_plain_template_masks_the_prompt():
    from rucai.llm.models import char_tokenizer
    from rucai.llm.sft import encode_example
    from rucai.rvsyn.tasks import PLAIN_TEMPLATE, sft_examples

    tok = char_tokenizer()
    tok.chat_template = PLAIN_TEMPLATE  # a base model without a chat template gets this one
    (msgs, target), = sft_examples([{"problem": "1+1?", "solution": "2"}], "Q: ")
    ex = encode_example(tok, msgs, target, 256)
    answer = [t for t, lab in zip(ex["input_ids"], ex["labels"], strict=True) if lab != -100]
    assert tok.decode(answer[:-1]) == "2" and answer[-1] == tok.eos_token_id
    assert "Question: Q: 1+1?\nAnswer: " in tok.decode(ex["input_ids"])
