"""Strict final-answer checker for math benchmarks (OlymMATH, MATH-500, AIME ...).

API
---
``extract_answer(response) -> str | None``
    The final answer of a model response: the content of the LAST complete ``\\boxed{...}`` /
    ``\\fbox{...}`` (nested braces matched, ``\\{``/``\\}`` are literal braces), or ``\\boxed 5``
    (no braces: the next token). Without a box: the last "final answer: X", "the answer is X",
    "answer: X", "答案是 X", "答案为 X", "最终答案 X", "答：X" (up to the end of the sentence / line,
    or the next non-empty line when the phrase ends its line; a ``$...$`` right after the phrase is
    taken whole). ``None`` when there is no final answer.

``verify(response, gold, protocol="strict") -> bool``
    ``protocol="strict"`` (default): rules below. ``protocol="olymmath_lenient"``: the OlymMATH
    authors' released protocol (see :func:`olymmath_lenient_verify`). ``protocol="math_verify"``:
    plain ``math_verify.verify(parse("$" + gold + "$"), parse(response))`` on the whole response
    (baseline; see :func:`math_verify_baseline`).

How the three compare on real model outputs (DeepSeek-R1 on AIME 2023, SmolLM2-135M-Instruct on
MATH-500 and GSM8K), with every disagreement labelled by hand: ``python -m rucai.eval.math_bench
compare`` and experiments/olymmath/README.md.

Strict rules
------------
* No final answer (no box, no answer phrase, empty box) -> wrong.
* Normalisation (both sides): ``$``/``\\(``/``\\[`` wrappers; ``\\dfrac``/``\\tfrac``/``\\cfrac`` ->
  ``\\frac``; ``\\left``/``\\right``/``\\displaystyle``; spaces ``\\!``, ``\\,``, ``\\;``, ``\\:``,
  ``\\ ``, ``~``, ``\\quad``; ``\\text{}``/``\\textbf{}``/``\\mathrm{}``/``\\mbox{}``... wrappers;
  a lead-in sentence inside the box ("The answer is", "Final answer:", "答案是" ...); degrees
  (``^\\circ``, ``^{\\circ}``, ``°``, ``\\degree``, "degrees"); units at the end (``\\text{ cm}^2``,
  ``cm``, ``km/h``, "dollars", "cents", "minutes", 厘米 ...; one-letter units such as ``m`` only when
  they were inside ``\\text{}``/``\\mbox{}``); currency ``\\$``; thousands separators
  (``1{,}000``, ``1\\,000`` always; ``1,000,000`` when the gold is a single value); Unicode
  (``−`` ``×`` ``·`` ``÷`` ``√`` ``π`` ``∞`` ``≤`` ``≥`` ``°`` full-width punctuation); a leading
  assignment ``x = 5`` / ``a_n = ...`` / ``\\theta = ...`` (only when the gold has no ``=``; for
  ``x = 2 + 3 = 5`` the last right-hand side is kept); a trailing period.
* Percent: ``\\%``/``%`` is dropped like a unit, so ``50\\%`` == ``50``, but ``50\\%`` != ``0.5``
  (no gold in OlymMATH carries a percent sign; MATH-500 golds state percents as the number that
  goes before the sign, so accepting 0.5 for 50 would accept a wrong scale).
* Degrees: ``15^\\circ`` == ``15`` == ``15°``; an answer in radians containing ``\\pi`` (``\\frac{\\pi}{12}``)
  equals a gold in degrees (``15^{\\circ}``) and vice versa. A bare number is never converted.
* Structure: ``\\{...\\}`` sets, comma/``;``/"or"/"and"/"或"/"和" separated lists of solutions and
  ``\\cup`` unions are compared as multisets (order ignored, counts must match: extra answers are
  wrong, so ``3 \\text{ or } 4`` != ``3``); ``\\pm`` expands to two solutions; bracketed tuples and
  intervals ``(a,b)``, ``[a,b)``... are ordered and the bracket kinds must match (``(0,1]`` !=
  ``[0,1]``, ``(1,2)`` != ``(2,1)``).
* Scalars: normalised string equality; then an exact numeric evaluator (integers, decimals,
  ``\\frac``, ``^``, ``\\sqrt[n]{}``, ``\\pi``, ``\\infty``, ``!``, ``\\times``/``\\cdot``/``\\div``,
  trig and inverse trig, ``\\ln``) with :class:`fractions.Fraction` where exact and floats
  (relative tolerance 1e-9) otherwise: when both sides evaluate, that decides (``27+1`` != 27,
  ``127`` != 27; a decimal approximation such as 1.414 is NOT accepted for ``\\sqrt{2}``). Only
  when a side cannot be evaluated (variables, matrices, complex numbers, text) do text answers
  compare case-insensitively and the rest go to math-verify (``parse`` + ``verify`` with its
  signal-based timeouts in the main thread; from another thread the timeouts are switched off,
  inputs over 1000 characters are refused, and errors mean "not equal").
* ``2^2023`` (digits after ``^`` without braces, as in one OlymMATH gold) is read as ``2^{2023}``;
  an integer glued to a fraction of integers is a mixed number (``1\\frac{4}{5}`` = 9/5, as in
  MATH); numbers in a base (``52_8``) must match digits and base (a bare ``52`` is accepted).
* Units are ignored, even a wrong one (``15 cm^3`` for gold ``15 cm^2``).
* Intervals: for a gold interval (or union of intervals) a membership ``x \\in [7,47]`` and an
  inequality in one variable are read as the interval they denote (``7 \\le x \\le 47`` ->
  ``[7,47]``, ``0 < x \\le 1`` -> ``(0,1]``, ``x > 2`` -> ``(2,\\infty)``, ``x<1`` or ``x>2`` ->
  ``(-\\infty,1) \\cup (2,\\infty)``); bracket kinds must still match.

OlymMATH authors' protocol (``protocol="olymmath_lenient"``)
-----------------------------------------------------------
See :func:`olymmath_lenient_verify`.

Module imports are light: math-verify (sympy, antlr) is imported only when the symbolic path or
the math_verify/olymmath protocols run.
"""

from __future__ import annotations

import functools
import math
import re
import threading
from fractions import Fraction

__all__ = [
    "extract_answer",
    "verify",
    "normalize_answer",
    "olymmath_lenient_verify",
    "olymmath_string_match",
    "olymmath_extract_boxed",
    "math_verify_baseline",
]

PROTOCOLS = ("strict", "olymmath_lenient", "math_verify")

# --------------------------------------------------------------------------------------------
# extraction
# --------------------------------------------------------------------------------------------

_BOX_CMD = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")


def _match_brace(text: str, start: int) -> int:
    """Index of the ``}`` closing the ``{`` at ``start`` (``\\{``/``\\}`` skipped), or -1."""
    depth = 0
    i = start
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def _boxed_contents(text: str, commands: tuple[str, ...] = ("boxed", "fbox"), bare: bool = True) -> list[str]:
    """Contents of every complete box, in order of appearance."""
    pattern = (
        _BOX_CMD
        if commands == ("boxed", "fbox")
        else re.compile(r"\\(?:" + "|".join(commands) + r")(?![a-zA-Z])")
    )
    out: list[str] = []
    for m in pattern.finditer(text):
        j = m.end()
        while j < len(text) and text[j] in " \t":
            j += 1
        if j < len(text) and text[j] == "{":
            end = _match_brace(text, j)
            if end != -1:
                out.append(text[j + 1 : end])
        elif bare and j > m.end():
            tok = re.match(r"[^\s$]+", text[j:])
            if tok:
                out.append(tok.group(0).rstrip(".,;"))
    return out


_ANSWER_PHRASES = re.compile(
    r"final\s+answer\s*(?:is\s*)?[:：]?"
    r"|the\s+answer\s+is\s*[:：]?"
    r"|\banswer\s*[:：]"
    r"|最终答案\s*(?:是|为)?\s*[:：]?"
    r"|答案\s*(?:是|为)\s*[:：]?"
    r"|答案\s*[:：]"
    r"|答\s*[:：]",
    re.IGNORECASE,
)


def _answer_after_phrase(tail: str) -> str | None:
    tail = tail.lstrip(" \t*")
    if tail[:1] in ("\n", "\r"):  # "the answer is:" ending its line: the answer is on the next one
        tail = tail.lstrip(" \t*\r\n")
    for open_, close in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if tail.startswith(open_):
            end = tail.find(close, len(open_))
            if end != -1:
                return tail[len(open_) : end]
    line = tail.split("\n", 1)[0]
    line = re.split(r"\.(?=\s|$)|。|；", line, maxsplit=1)[0]
    line = line.strip().strip("*").strip()
    return line or None


def extract_answer(response: str) -> str | None:
    """The final answer of ``response`` (see module docstring), or ``None``."""
    if not response:
        return None
    boxes = _boxed_contents(response)
    if boxes:
        ans = boxes[-1].strip()
        return ans or None
    last = None
    for m in _ANSWER_PHRASES.finditer(response):
        last = m
    if last is None:
        return None
    return _answer_after_phrase(response[last.end() :])


# --------------------------------------------------------------------------------------------
# normalisation
# --------------------------------------------------------------------------------------------

_UNICODE = {
    "−": "-",
    "–": "-",
    "—": "-",
    "×": r"\times ",
    "·": r"\cdot ",
    "⋅": r"\cdot ",
    "÷": r"\div ",
    "π": r"\pi ",
    "∞": r"\infty ",
    "≤": r"\le ",
    "≥": r"\ge ",
    "≠": r"\ne ",
    "，": ",",
    "：": ":",
    "；": ";",
    "（": "(",
    "）": ")",
    "【": "[",
    "】": "]",
    "。": ".",
    "∪": r"\cup ",
    "\u00a0": " ",
    "\u2009": " ",
    "\u3000": " ",
}
_UNICODE_RE = re.compile("|".join(map(re.escape, _UNICODE)))
_SQRT_UNI = re.compile(r"√\s*(\{|\(|\d+(?:\.\d+)?|\\?[a-zA-Z])")

_UNIT_WORDS = (
    r"(?:square\s+|sq\.?\s+|cubic\s+)?(?:centimet(?:er|re)s?|millimet(?:er|re)s?|kilomet(?:er|re)s?|"
    r"met(?:er|re)s?|inches|inch|feet|foot|ft|yards?|miles?|cm|mm|km|kg|mg|km/h|km/hr|m/s|mph|kph|"
    r"hours?|hrs?|minutes?|mins?|seconds?|secs?|days?|weeks?|months?|years?|dollars?|cents?|"
    r"radians?|units?|grams?|kilograms?|pounds?|lbs?|ounces?|oz|lit(?:er|re)s?|ml|people|persons?|"
    r"students|ways|points|times|平方厘米|平方米|厘米|千米|公里|米|秒|分钟|小时|天|元|个|人|种|次)"
)
_DEG_WORDS = r"(?:degrees?|deg|度)"
_TEXT_UNIT = re.compile(
    r"\\(?:text|mbox|mathrm|textrm|rm)\s*\{\s*(?:" + _UNIT_WORDS + r"|m|g|s|h|l|L)\s*\}"
    r"(?:\s*\^\s*\{?\s*[23]\s*\}?|[²³])?"
)
_TEXT_DEG = re.compile(r"\\(?:text|mbox|mathrm|textrm)\s*\{\s*" + _DEG_WORDS + r"\s*\}")
_TRAIL_UNIT = re.compile(
    r"(?<=[\d}\s)])\s*" + _UNIT_WORDS + r"(?:\s*\^\s*\{?\s*[23]\s*\}?|[²³])?\s*$", re.IGNORECASE
)
_TRAIL_DEG = re.compile(r"(?<=[\d}\s)])\s*" + _DEG_WORDS + r"\s*$", re.IGNORECASE)
_DEGREE = re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|°|\\degree(?![a-zA-Z])|\\circ(?![a-zA-Z])")
_WRAPPERS = re.compile(
    r"\\(?:text|textbf|textit|textrm|texttt|textsf|mathrm|mathbf|mathit|mathsf|mathtt|mbox|"
    r"boldsymbol|bm|operatorname\*?|emph)\s*\{"
)
_SPACES = re.compile(r"(?<!\\)((?:\\\\)*)(?:\\[,;:! ]|\\q?quad(?![a-zA-Z])|~)")
_LEADIN = re.compile(
    r"^(?:(?:so|thus|therefore|hence|then)\s*,?\s*)?(?:the\s+)?(?:final\s+)?(?:answer|result)"
    r"\s*(?:is|=|:)?\s*:?\s*"
    r"|^(?:所以|因此|故)?\s*(?:最终答案|答案)\s*(?:是|为)?\s*[:：]?\s*|^答\s*[:：]\s*",
    re.IGNORECASE,
)
_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")


def _unwrap(s: str) -> str:
    """Replace ``\\text{...}`` & co. by their content (nested braces respected)."""
    for _ in range(20):
        m = _WRAPPERS.search(s)
        if not m:
            return s
        end = _match_brace(s, m.end() - 1)
        if end == -1:
            return s[: m.start()] + s[m.end() :]
        s = s[: m.start()] + " " + s[m.end() : end] + " " + s[end + 1 :]
    return s


@functools.lru_cache(maxsize=65536)
def _normalize(s: str) -> tuple[str, bool]:
    """Normalised answer string and whether it carried a degree sign."""
    s = s.strip()
    if "√" in s:
        s = _SQRT_UNI.sub(
            lambda m: r"\sqrt{" + m.group(1) + "}" if m.group(1) not in "{(" else r"\sqrt" + m.group(1), s
        )
        s = s.replace("√", r"\sqrt")
    s = _UNICODE_RE.sub(lambda m: _UNICODE[m.group(0)], s)
    s = s.replace(r"\$", " ")
    s = s.replace("$", " ")
    s = re.sub(r"\\[()]", " ", s)
    s = s.strip()
    if s.startswith(r"\[") and s.endswith(r"\]"):
        s = s[2:-2]
    s = re.sub(r"\\[dtc]frac(?![a-zA-Z])", r"\\frac", s)
    s = re.sub(r"\\(?:left|right|big|Big|bigg|Bigg)[lr]?(?![a-zA-Z])|\\displaystyle(?![a-zA-Z])", "", s)
    s = re.sub(r"\\(?:le|leq|leqslant)(?![a-zA-Z])", r"\\le ", s)
    s = re.sub(r"\\(?:ge|geq|geqslant)(?![a-zA-Z])", r"\\ge ", s)
    s = re.sub(r"(\d)\{,\}(?=\d)", r"\1", s)
    s = re.sub(r"(\d)(?:\\[,! ]|~)\s*(?=\d{3}(?!\d))", r"\1", s)
    s = _SPACES.sub(r"\1 ", s)
    deg = False
    if _TEXT_DEG.search(s):
        s = _TEXT_DEG.sub(" ", s)
        deg = True
    s = _TEXT_UNIT.sub(" ", s)
    s = _unwrap(s)
    s = re.sub(r"\s+", " ", s).strip()
    for _ in range(3):
        s2 = _LEADIN.sub("", s).strip().rstrip(".").strip()
        if s2 == s:
            break
        s = s2
    if _DEGREE.search(s):
        s = _DEGREE.sub(" ", s)
        deg = True
    s = re.sub(r"\\?%", " ", s)
    s = s.strip().rstrip(".").strip()
    for _ in range(2):
        m = _TRAIL_DEG.search(s)
        if m and m.start() > 0:
            s, deg = s[: m.start()].strip(), True
        m = _TRAIL_UNIT.search(s)
        if m and m.start() > 0:
            s = s[: m.start()].strip()
    s = s.rstrip(".").strip()
    # one redundant outer brace group: {1,2} is just 1,2 in LaTeX
    while s.startswith("{") and _match_brace(s, 0) == len(s) - 1:
        s = s[1:-1].strip()
    return s, deg


def normalize_answer(s: str) -> str:
    """The normalised form used for comparison (degree sign dropped)."""
    return _normalize(s)[0]


def _key(s: str) -> str:
    return re.sub(r"\s+", "", s)


# --------------------------------------------------------------------------------------------
# structure
# --------------------------------------------------------------------------------------------

_OPEN = "([{"
_CLOSE = ")]}"


def _top_level_split(s: str, seps: re.Pattern[str]) -> list[str]:
    """Split ``s`` at matches of ``seps`` outside any bracket or brace."""
    parts: list[str] = []
    depth = 0
    last = 0
    i = 0
    n = len(s)
    while i < n:
        c = s[i]
        if c == "\\" and i + 1 < n and s[i + 1] in "{}":
            depth += 1 if s[i + 1] == "{" else -1
            i += 2
            continue
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
        elif depth == 0:
            m = seps.match(s, i)
            if m and m.end() > i:
                parts.append(s[last:i])
                last = i = m.end()
                continue
        i += 1
    parts.append(s[last:])
    return [p.strip() for p in parts]


_COMMA = re.compile(r",|;")
_LIST_SEP = re.compile(r",|;|\s+(?:or|and)\s+|或者|或|和|及|以及|\\text\{or\}")
_CUP = re.compile(r"\\cup(?![a-zA-Z])")
_PM = re.compile(r"\\pm(?![a-zA-Z])|±")


def _outer_pair_spans(s: str) -> bool:
    """True when s[0] opens a bracket that closes at s[-1] (any bracket kinds)."""
    depth = 0
    for i, c in enumerate(s):
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth -= 1
            if depth == 0 and i != len(s) - 1:
                return False
    return depth == 0


def _set_spans(s: str) -> bool:
    """True when the ``\\{`` at s[0] is closed by the ``\\}`` at the end of s."""
    depth = 0
    i = 0
    while i < len(s) - 1:
        if s[i] == "\\" and s[i + 1] in "{}":
            depth += 1 if s[i + 1] == "{" else -1
            if depth == 0 and i + 2 != len(s):
                return False
            i += 2
            continue
        i += 1
    return depth == 0


def _structure(s: str) -> tuple[str, str, list[str]]:
    """(kind, brackets, items): kind in scalar / seq (ordered, brackets e.g. '[)') / bag (unordered)."""
    if s.startswith(r"\{") and s.endswith(r"\}") and _set_spans(s):
        inner = s[2:-2].strip()
        return "bag", "", [p for p in _top_level_split(inner, _LIST_SEP) if p] if inner else []
    if len(_top_level_split(s, _CUP)) > 1:
        return "bag", "", _top_level_split(s, _CUP)
    parts = [p for p in _top_level_split(s, _LIST_SEP)]
    if len(parts) > 1:
        return "bag", "", [p for p in parts if p]
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]" and _outer_pair_spans(s):
        inner = _top_level_split(s[1:-1], _COMMA)
        if len(inner) > 1:
            return "seq", s[0] + s[-1], inner
    pm = _top_level_split(s, _PM)
    if len(pm) == 2:
        a, b = pm
        return "bag", "", [f"{a}+{b}" if a else b, f"{a}-{b}" if a else f"-{b}"]
    return "scalar", "", [s]


# --------------------------------------------------------------------------------------------
# exact / float numeric evaluation of simple LaTeX
# --------------------------------------------------------------------------------------------


class _NotNumeric(Exception):
    pass


_TOKEN = re.compile(r"\s*(?:(\d+(?:\.\d+)?|\.\d+)|(\\[a-zA-Z]+|\\[{}|])|(\S))")
_FUNCS = {
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "cot": lambda x: 1 / math.tan(x),
    "sec": lambda x: 1 / math.cos(x),
    "csc": lambda x: 1 / math.sin(x),
    "arcsin": math.asin,
    "arccos": math.acos,
    "arctan": math.atan,
    "ln": math.log,
    "exp": math.exp,
    "sinh": math.sinh,
    "cosh": math.cosh,
    "tanh": math.tanh,
}
_MUL = {"*", r"\times", r"\cdot", "/", r"\div"}
_MAX_BITS = 200_000


def _tokenize(s: str) -> list[tuple[str, str]]:
    toks: list[tuple[str, str]] = []
    pos = 0
    s = s.rstrip()
    while pos < len(s):
        m = _TOKEN.match(s, pos)
        if not m:
            break
        pos = m.end()
        if m.group(1) is not None:
            toks.append(("num", m.group(1)))
        elif m.group(2) is not None:
            toks.append(("cmd", m.group(2)))
        else:
            toks.append(("ch", m.group(3)))
    return toks


def _to_float(v: Fraction | float) -> float:
    try:
        return float(v)
    except OverflowError as e:
        raise _NotNumeric from e


def _nth_root(v: Fraction | float, n: int) -> Fraction | float:
    if n <= 0:
        raise _NotNumeric
    if isinstance(v, Fraction):
        if v < 0:
            if n % 2 == 0:
                raise _NotNumeric
            return -_nth_root(-v, n)
        if n <= 12 and v.numerator.bit_length() < 4000 and v.denominator.bit_length() < 4000:
            num, den = _iroot(v.numerator, n), _iroot(v.denominator, n)
            if num is not None and den is not None:
                return Fraction(num, den)
    f = _to_float(v)
    if f < 0:
        if n % 2 == 0:
            raise _NotNumeric
        return -((-f) ** (1.0 / n))
    return f ** (1.0 / n)


def _iroot(x: int, n: int) -> int | None:
    if x < 2:
        return x
    r = round(x ** (1.0 / n)) if x.bit_length() < 1000 else int(math.exp(math.log(x) / n))
    for c in (r - 1, r, r + 1):
        if c >= 0 and c**n == x:
            return c
    return None


def _pow(a: Fraction | float, b: Fraction | float) -> Fraction | float:
    if isinstance(b, Fraction) and b.denominator == 1 and isinstance(a, Fraction):
        e = b.numerator
        bits = max(a.numerator.bit_length(), a.denominator.bit_length(), 1)
        if abs(e) * bits > _MAX_BITS:
            raise _NotNumeric
        if a == 0 and e < 0:
            raise _NotNumeric
        return a**e
    if isinstance(b, Fraction) and b.denominator <= 12 and isinstance(a, Fraction):
        root = _nth_root(a, b.denominator)
        return _pow(root, Fraction(b.numerator)) if isinstance(root, Fraction) else _fpow(root, b.numerator)
    return _fpow(a, b)


def _fpow(a: Fraction | float, b: Fraction | float) -> float:
    fa, fb = _to_float(a), _to_float(b)
    try:
        r = fa**fb
    except (OverflowError, ZeroDivisionError) as e:
        raise _NotNumeric from e
    if isinstance(r, complex):
        raise _NotNumeric
    return r


class _Evaluator:
    def __init__(self, s: str):
        self.toks = _tokenize(s)
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> tuple[str, str]:
        if self.i >= len(self.toks):
            raise _NotNumeric
        t = self.toks[self.i]
        self.i += 1
        return t

    def expect(self, ch: str) -> None:
        t = self.take()
        if t[1] != ch:
            raise _NotNumeric

    def run(self) -> Fraction | float:
        if not self.toks:
            raise _NotNumeric
        v = self.expr()
        if self.i != len(self.toks):
            raise _NotNumeric
        return v

    def expr(self) -> Fraction | float:
        v = self.term()
        while (t := self.peek()) is not None and t[1] in ("+", "-"):
            self.take()
            w = self.term()
            v = v + w if t[1] == "+" else v - w
        return v

    def _starts_atom(self, t: tuple[str, str]) -> bool:
        kind, val = t
        if kind == "num":
            return True
        if kind == "ch":
            return val in "({"
        return val in (r"\frac", r"\sqrt", r"\pi", r"\infty") or val[1:] in _FUNCS

    def term(self) -> Fraction | float:
        v = self.unary()
        while (t := self.peek()) is not None:
            if t[1] in _MUL:
                self.take()
                w = self.unary()
                if t[1] in ("/", r"\div"):
                    if w == 0:
                        raise _NotNumeric
                    v = v / w
                else:
                    v = v * w
            elif self._starts_atom(t):
                prev = self.toks[self.i - 1]
                if t[0] == "num" and prev[0] == "num":
                    raise _NotNumeric  # "1 000" or "2 3": not a product
                v = v * self.power()
            else:
                break
        return v

    def unary(self) -> Fraction | float:
        t = self.peek()
        if t is not None and t[1] == "-":
            self.take()
            return -self.unary()
        if t is not None and t[1] == "+":
            self.take()
            return self.unary()
        return self.power()

    def power(self) -> Fraction | float:
        base = self.atom()
        while (t := self.peek()) is not None and t[1] == "!":
            self.take()
            if not (isinstance(base, Fraction) and base.denominator == 1 and 0 <= base <= 3000):
                raise _NotNumeric
            base = Fraction(math.factorial(int(base)))
        if (t := self.peek()) is not None and t[1] == "^":
            self.take()
            return _pow(base, self.exponent())
        return base

    def exponent(self) -> Fraction | float:
        t = self.peek()
        if t is None:
            raise _NotNumeric
        if t[1] == "-":
            self.take()
            return -self.exponent()
        if t[0] == "num":  # 2^2023 read as 2^{2023} (see module docstring)
            self.take()
            return Fraction(t[1])
        return self.atom()

    def arg(self) -> Fraction | float:
        """A macro argument: {group}, one digit, or one atom."""
        t = self.peek()
        if t is None:
            raise _NotNumeric
        if t[0] == "num" and len(t[1]) > 1:
            self.toks[self.i] = ("num", t[1][1:])
            return Fraction(t[1][0])
        return self.atom()

    def atom(self) -> Fraction | float:
        kind, val = self.take()
        if kind == "num":
            return Fraction(val)
        if val == "(" or val == "{":
            v = self.expr()
            self.expect(")" if val == "(" else "}")
            return v
        if val == r"\frac":
            a = self.arg()
            b = self.arg()
            if b == 0:
                raise _NotNumeric
            return a / b
        if val == r"\sqrt":
            n = 2
            if (t := self.peek()) is not None and t[1] == "[":
                self.take()
                nv = self.expr()
                self.expect("]")
                if not (isinstance(nv, Fraction) and nv.denominator == 1):
                    raise _NotNumeric
                n = int(nv)
            return _nth_root(self.arg(), n)
        if val == r"\pi":
            return math.pi
        if val == r"\infty":
            return math.inf
        fn = _FUNCS.get(val[1:]) if kind == "cmd" else None
        if fn is not None:
            t = self.peek()
            if t is not None and t[1] == "^":
                raise _NotNumeric  # \sin^2 x
            x = self.power()
            try:
                r = fn(_to_float(x))
            except (ValueError, OverflowError, ZeroDivisionError) as e:
                raise _NotNumeric from e
            return r
        raise _NotNumeric


_MIXED = re.compile(r"(?<![\d.}^_)])(\d+)\s*\\frac\{(\d+)\}\{(\d+)\}")


@functools.lru_cache(maxsize=65536)
def _evaluate(s: str) -> Fraction | float | None:
    if len(s) > 400:
        return None
    # mixed numbers: 1\frac{4}{5} is 1 + 4/5 (an integer glued to a fraction of integers)
    s = _MIXED.sub(r"(\1+\\frac{\2}{\3})", s)
    try:
        return _Evaluator(s).run()
    except (_NotNumeric, ZeroDivisionError, ValueError, OverflowError, RecursionError):
        return None


def _num_equal(a: Fraction | float, b: Fraction | float) -> bool:
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return a == b
    try:
        fa, fb = float(a), float(b)
    except OverflowError:
        return False
    if math.isinf(fa) or math.isinf(fb) or math.isnan(fa) or math.isnan(fb):
        return fa == fb
    return math.isclose(fa, fb, rel_tol=1e-9, abs_tol=1e-12)


# --------------------------------------------------------------------------------------------
# comparison
# --------------------------------------------------------------------------------------------

_ASSIGN = re.compile(
    r"^(?:[A-Za-z]{1,3}(?:_\{?[\w\\]+\}?)?(?:\([a-z, ]*\))?|\\[a-zA-Z]+(?:_\{?\w+\}?)?"
    r"|\\angle\s*[A-Z]{1,3}|[a-z]_\{?\w+\}?)\s*="
)
_TEXTY = re.compile(r"^[A-Za-z() ]+$")
_BASE = re.compile(r"^([0-9A-Za-z]+)_\{?(\d+)\}?$")


_VAR = (
    r"(?:[A-Za-z](?:_\{?\w+\}?)?|\\(?:alpha|beta|gamma|theta|lambda|mu|phi|varphi|omega|varepsilon|epsilon))"
)
_MEMBER = re.compile(r"^" + _VAR + r"\s*\\in(?![a-zA-Z])\s*")
_LESS = r"(<|\\le(?![a-zA-Z]))"
_GREATER = r"(>|\\ge(?![a-zA-Z]))"
_INEQ_CHAIN_UP = re.compile(
    r"^(?P<a>[^<>]+?)\s*" + _LESS + r"\s*" + _VAR + r"\s*" + _LESS + r"\s*(?P<b>[^<>]+)$"
)
_INEQ_CHAIN_DOWN = re.compile(
    r"^(?P<b>[^<>]+?)\s*" + _GREATER + r"\s*" + _VAR + r"\s*" + _GREATER + r"\s*(?P<a>[^<>]+)$"
)
_INEQ_VAR_FIRST = re.compile(
    r"^" + _VAR + r"\s*(?P<op><|>|\\le(?![a-zA-Z])|\\ge(?![a-zA-Z]))\s*(?P<c>[^<>]+)$"
)
_INEQ_VAR_LAST = re.compile(
    r"^(?P<c>[^<>]+?)\s*(?P<op><|>|\\le(?![a-zA-Z])|\\ge(?![a-zA-Z]))\s*" + _VAR + r"$"
)


def _inequality_to_interval(s: str) -> str | None:
    """An inequality in one variable as interval notation, or None: ``7 \\le x \\le 47`` ->
    ``[7,47]``, ``0 < x \\le 1`` -> ``(0,1]``, ``x > 2`` -> ``(2,\\infty)``, ``x \\le 3`` ->
    ``(-\\infty,3]`` (also written the other way round, ``47 \\ge x \\ge 7``, ``2 < x``).
    Bounds that are themselves variables are kept as written; the comparison decides."""
    s = re.sub(r"\\gt(?![a-zA-Z])", ">", re.sub(r"\\lt(?![a-zA-Z])", "<", s)).strip()
    m = _INEQ_CHAIN_UP.match(s)
    if m:
        a, op1, op2, b = m.group("a"), m.group(2), m.group(3), m.group("b")
        return ("(" if op1 == "<" else "[") + f"{a.strip()},{b.strip()}" + (")" if op2 == "<" else "]")
    m = _INEQ_CHAIN_DOWN.match(s)
    if m:
        b, op1, op2, a = m.group("b"), m.group(2), m.group(3), m.group("a")
        return ("(" if op2 == ">" else "[") + f"{a.strip()},{b.strip()}" + (")" if op1 == ">" else "]")
    m = _INEQ_VAR_FIRST.match(s)
    flip = False
    if not m:
        m, flip = _INEQ_VAR_LAST.match(s), True
    if not m:
        return None
    op, c = m.group("op"), m.group("c").strip()
    lower = op in (">", r"\ge") if not flip else op in ("<", r"\le")  # x > c / c < x: c is a lower bound
    strict = op in ("<", ">")
    if lower:
        return ("(" if strict else "[") + f"{c},\\infty)"
    return f"(-\\infty,{c}" + (")" if strict else "]")


def _strip_assignment(s: str) -> str:
    while True:
        m = _ASSIGN.match(s)
        if not m:
            return s
        s = s[m.end() :].strip()
        # x = 2 + 3 = 5: keep the last right-hand side
        parts = _top_level_split(s, re.compile("="))
        s = parts[-1] if parts[-1] else s


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@functools.lru_cache(maxsize=8192)
def _mv_parse(s: str, main: bool):
    from math_verify import parse

    if main:
        return parse(f"${s}$", parsing_timeout=5)
    return parse(f"${s}$", parsing_timeout=None)


def _symbolic_equal(g: str, p: str) -> bool:
    if len(g) > 1000 or len(p) > 1000:
        return False
    main = _in_main_thread()
    try:
        from math_verify import verify as mv_verify

        gp, pp = _mv_parse(g, main), _mv_parse(p, main)
        if not gp or not pp:
            return False
        return bool(mv_verify(gp, pp, timeout_seconds=5 if main else None))
    except BaseException as e:  # noqa: BLE001 - math-verify's TimeoutException is a BaseException
        if isinstance(e, KeyboardInterrupt | SystemExit):
            raise
        return False


def _scalar_equal(g: str, gdeg: bool, p: str, pdeg: bool) -> bool:
    if "=" not in g:
        p = _strip_assignment(p)
    if not p:
        return False
    if _key(g) == _key(p) and (gdeg == pdeg or "\\pi" not in g + p):
        return True
    gb, pb = _BASE.match(_key(g)), _BASE.match(_key(p))
    if gb or pb:  # numbers written in a base: digits and base must match (gold 52_8 accepts 52)
        if gb and pb:
            return gb.groups() == pb.groups()
        plain, based = (p, gb) if gb else (g, pb)
        return _key(plain) == based.group(1)
    gv, pv = _evaluate(g), _evaluate(p)
    if gv is not None and pv is not None:
        if gdeg != pdeg and ("\\pi" in g or "\\pi" in p):
            # one side in degrees, the other in radians
            if gdeg:
                gv = _to_float(gv) * math.pi / 180
            else:
                pv = _to_float(pv) * math.pi / 180
        return _num_equal(gv, pv)
    if (gv is None) != (pv is None) and (_TEXTY.match(g) or _TEXTY.match(p)):
        return False
    if _TEXTY.match(g) and _TEXTY.match(p):
        return _key(g.lower()).strip("()") == _key(p.lower()).strip("()")
    return _symbolic_equal(g, p)


def _equal(g: str, gdeg: bool, p: str, pdeg: bool, gold_single: bool, depth: int = 0) -> bool:
    if depth > 6:
        return False
    if gold_single and _THOUSANDS.match(_key(p)):
        p = _key(p).replace(",", "")
    if _key(g) == _key(p) and gdeg == pdeg:
        return True
    gk, gb, gitems = _structure(g)
    pk, pb, pitems = _structure(p)
    if pk == "scalar" and "=" not in g:
        p = _strip_assignment(p)
        pk, pb, pitems = _structure(p)
    if pk == "scalar" and "\\in" not in g and _MEMBER.match(p):  # x \in [7,47] for gold [7,47]
        p = _MEMBER.sub("", p, count=1)
        pk, pb, pitems = _structure(p)
    if gk == "seq" and pk == "scalar" and (iv := _inequality_to_interval(p)) is not None:
        p = iv  # 7 \le x \le 47 for gold [7,47]
        pk, pb, pitems = _structure(p)
    elif pk == "seq" and gk == "scalar" and (iv := _inequality_to_interval(g)) is not None:
        g = iv
        gk, gb, gitems = _structure(g)
    if gk == "scalar" and pk == "scalar":
        return _scalar_equal(g, gdeg, p, pdeg)
    if gk != pk or len(gitems) != len(pitems):
        return False
    if gk == "seq":
        if gb != pb:
            return False
        return all(_equal(a, gdeg, b, pdeg, False, depth + 1) for a, b in zip(gitems, pitems, strict=True))
    # unordered multiset matching
    unused = list(range(len(gitems)))
    for b in pitems:
        for idx in unused:
            if _equal(gitems[idx], gdeg, b, pdeg, False, depth + 1):
                unused.remove(idx)
                break
        else:
            return False
    return not unused


def _strict_answer_equal(answer: str, gold: str) -> bool:
    g, gdeg = _normalize(gold)
    p, pdeg = _normalize(answer)
    if not p or not g:
        return False
    gold_single = _structure(g)[0] == "scalar" or bool(_THOUSANDS.match(_key(g)))
    if _THOUSANDS.match(_key(g)):
        g = _key(g).replace(",", "")
    return _equal(g, gdeg, p, pdeg, gold_single)


# --------------------------------------------------------------------------------------------
# OlymMATH authors' protocol
# --------------------------------------------------------------------------------------------


def _mv_dollar(answer: str) -> str:
    """The authors' ``format_for_math_verify``: strip, drop one leading/trailing ``$``, wrap in ``$``;
    empty -> ``$.$`` (RUCAIBox/OlymMATH local_tester.py at 94e19ff; math-verify reads it as the string
    ``0.``, so an empty answer is never correct, also when the gold is 0)."""
    a = (answer or "").strip()
    if a.startswith("$"):
        a = a[1:]
    if a.endswith("$"):
        a = a[:-1]
    a = a.strip()
    return f"${a}$" if a else "$.$"


def olymmath_string_match(extracted: str, gold: str) -> bool:
    """The authors' string fallback: after deleting whitespace, ``\\frac`` and every other
    ``\\command`` (``\\cdot``/``\\times`` become ``*``), equal OR either one contains the other.

    Containment makes it accept 127 (and 1127, 27+1, ``3 \\text{ or } 27``) for gold 27, the empty
    answer for every gold, ``\\frac{1}{2}`` ("12") for gold 12, and so on.
    """

    def squash(t: str) -> str:
        if not t:
            return ""
        t = re.sub(r"\s+", "", t).replace("\\frac", "")
        t = t.replace("\\cdot", "*").replace("\\times", "*")
        return re.sub(r"\\[a-zA-Z]+", "", t)

    e, g = squash(extracted), squash(gold)
    return e == g or g in e or e in g


_AUTHORS_BOX_RE = re.compile(r"\\boxed{((?:[^{}]|{(?:[^{}]|{[^{}]*})*})*?)}")


def olymmath_extract_boxed(text: str) -> str:
    """The authors' ``extract_boxed`` (RUCAIBox/OlymMATH ``local_tester.py`` at 94e19ff, the version our
    OlymMATH data comes from), line for line: a brace stack over the whole text (every unescaped
    ``{`` counts, also outside a box), the content of the LAST complete ``\\boxed{...}``; if the
    stack finds none, the last match of their regex; ``""`` when there is no box. Only
    ``\\boxed{`` written without a space; no ``\\fbox``, no "the answer is" fallback."""
    stack: list[str] = []
    contents: list[str] = []
    i, start_idx = 0, -1
    n = len(text)
    while i < n:
        if text[i : i + 7] == "\\boxed{" and (i == 0 or text[i - 1] != "\\"):
            if not stack:
                start_idx = i + 7
            stack.append("{")
            i += 7
        elif text[i] == "{" and (i == 0 or text[i - 1] != "\\"):
            stack.append("{")
            i += 1
        elif text[i] == "}" and (i == 0 or text[i - 1] != "\\"):
            if stack:
                stack.pop()
                if not stack and start_idx != -1:
                    contents.append(text[start_idx:i])
                    start_idx = -1
            i += 1
        else:
            i += 1
    if contents:
        return contents[-1]
    matches = list(_AUTHORS_BOX_RE.finditer(text))
    return matches[-1].group(1) if matches else ""


def olymmath_lenient_verify(response: str, gold: str) -> bool:
    """The OlymMATH authors' released grading, ``local_tester.py`` of github.com/RUCAIBox/OlymMATH at
    94e19ff (2025-06-01, the commit our OlymMATH data was taken from; its grading code is that of
    a1bfae8, 2025-04-20):

    1. :func:`olymmath_extract_boxed`: the content of the last ``\\boxed{...}``; no box -> ``""``.
    2. Both gold and extracted are formatted as ``$...$`` (one surrounding ``$`` stripped; an empty
       answer becomes ``$.$``), then ``is_correct = math_verify.verify(parse(gold), parse(ans))``
       with math-verify defaults.
    3. Only if that raises, :func:`olymmath_string_match` decides (substring containment).

    History (``git log -- local_tester.py``): the first release 92cc20d scored the FIRST box and
    formatted an empty answer as ``$0$``; 541717c (2025-04-20) switched to the last box but wrote the
    needle as ``"\\boxed{"`` in a non-raw string (a backspace character), so that commit alone found
    no box; a1bfae8 the same day restored the escaping and changed ``$0$`` to ``$.$``. The version
    our data comes from has neither slip.

    Step 3 accepts 127, 1127, ``27+1``, ``3 \\text{ or } 27`` for gold 27 and an empty extraction
    for any gold. With math-verify 0.9.0 ``parse``/``verify`` swallow their own errors and
    timeouts, so in the MAIN thread (the authors' script has no threads) step 3 never runs and the
    protocol equals math-verify on the boxed content; from another thread both raise
    ``ValueError`` (signal.alarm) and every answer is graded by step 3. Other false positives come
    from math-verify itself (``float_rounding=6``, partial parses).
    """
    extracted = olymmath_extract_boxed(response or "")
    try:
        from math_verify import parse
        from math_verify import verify as mv_verify

        return bool(mv_verify(parse(_mv_dollar(gold)), parse(_mv_dollar(extracted))))
    except Exception:
        try:
            return olymmath_string_match(extracted, gold)
        except Exception:
            return False


def math_verify_baseline(response: str, gold: str) -> bool:
    """Plain math-verify: ``verify(parse(gold), parse(response))`` with defaults (errors -> False),
    the gold formatted as ``$gold$`` first (as :func:`_mv_dollar`): math-verify's default
    extraction reads a bare gold such as ``2^{17}`` as 2 and ``[7,47]`` as nothing; inside ``$...$``
    it reads them whole. The response is parsed as it is (math-verify finds its last box or answer)."""
    gold_text = _mv_dollar(str(gold))
    try:
        from math_verify import parse
        from math_verify import verify as mv_verify

        if _in_main_thread():
            return bool(mv_verify(parse(gold_text), parse(response)))
        return bool(
            mv_verify(
                parse(gold_text, parsing_timeout=None),
                parse(response, parsing_timeout=None),
                timeout_seconds=None,
            )
        )
    except Exception:
        return False


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------


def verify(response: str, gold: str, protocol: str = "strict") -> bool:
    """True when ``response``'s final answer equals ``gold`` under ``protocol`` (module docstring)."""
    if protocol == "olymmath_lenient":
        return olymmath_lenient_verify(response, gold)
    if protocol == "math_verify":
        return math_verify_baseline(response, gold)
    if protocol != "strict":
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    answer = extract_answer(response)
    if answer is None or gold is None:
        return False
    try:
        return _strict_answer_equal(answer, str(gold))
    except RecursionError:
        return False
