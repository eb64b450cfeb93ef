"""The reproduction report of every paper: `python -m rucai.report [--check]`.

Reads `experiments/<paper>/paper.yml` (one per folder of `experiments/` that has a README.md: the
paper's reported numbers, where they were read, and which runs of ours reproduce them) and the run
artefacts committed under `experiments/<paper>/results/`, and writes

  reports/reproduction.md    the report (Markdown): a table of all papers at a glance, then per paper
                             the paper's numbers, ours (mean +- std over seeds, n, scale, date and
                             machine of the runs), the ratio ours/paper and a status per row
  reports/reproduction.html  the same as one HTML page, with the plots the papers commit under
                             `experiments/*/results/` embedded by relative link

Our numbers are aggregated over seeds by the results command's own code (`rucai.results.collect` +
`rucai.results.seeds_table`: mean, sample std with ddof 1, n over completed runs; runs that differ
only in `seed` form one group), so a number here is the number `python -m rucai.results` prints for
the same folders. The report is a build product: no generation time in it, everything sorted.
`--check` regenerates it in memory and exits 1, naming the first differing line, when the committed
files differ (CI runs it). Bad input (a missing or malformed paper.yml, results folder or
metrics.json) stops with one `error: ...` line naming the file (exit 2).

Why `paper.yml` and not `paper.yaml`: every `*.yaml` under `experiments/` is a Hydra experiment
(`conf/experiment -> ../experiments`, `rucai.cli.experiments()`), so a `paper.yaml` would be listed
and smoke-run as an experiment `<paper>/paper`.

paper.yml
---------
    paper: MTGRec                           # the name shown in the report
    title: "..."                            # the paper's title
    reference: "Zheng et al., SIGIR 2025"   # authors, venue, arXiv id
    area: rec | llm                         # the report lists baselines, then rec, then llm papers
    baseline: false                         # true for SASRec and TIGER, the shared baselines
    headline: <claim id>                    # the claim shown in the table of all papers
    _anchors: ...                           # top-level keys starting with _ hold YAML anchors only
    decimals: 4                             # decimals the paper prints (default: from each value)
    scales:                                 # settings our runs use besides `paper` (built in)
      office_cpu:
        description: "CPU stand-in: ..."
        dataset: "Amazon 2018 Office_Products"     # omitted: the claim's own dataset
        comparable: false                   # default false; `paper` is comparable
        deviations: ["...", "..."]          # what differs from the paper
    claims:
      - id: instruments                     # unique within the file
        claim: "MTGRec beats TIGER"
        source: "Table 2, MTGRec and TIGER rows" | "abstract" | ...
        verified: false                     # true only where the README says it was read in the paper
        verified_note: "secondary: ..."     # where it was read instead; required when verified is false
        dataset: "Amazon 2023 Musical_Instruments"
        row: MTGRec                         # the paper's model/method row
        metric: recall@10                   # with `value:` (null when not quoted: `null_reason:` says why)
        value: 0.0616                       #   or `range: [lo, hi]` for a quoted interval
        values: {recall@10: 0.0616, ...}    # instead of metric/value: one claim per metric, id <id>/<metric>
        paper_std: null                     # the paper's own spread, where it quotes one
        baseline: {row: TIGER, value: 0.0564}   # (or values:) makes it a comparison: row beats baseline
        higher_is_better: true
        reproductions:
          - experiment: mtgrec/instruments  # `python run.py experiment=...` (null: no experiment exists)
            scale: paper
            reason: "needs 4 GPUs ..."      # not run: why (required when there are no results)
          - experiment: mtgrec/office_cpu
            scale: office_cpu
            results: [experiments/tiger/results/office_cpu_comparison/mtgrec]   # run folders (walked
                                            # like `python -m rucai.results`), JSON files (globs allowed)
                                            # or CSV files
            metric: "test/{metric}"         # the key in metrics.json; {metric} = the claim's metric
            ignore: [trainer.max_time]      # overrides that do not tell runs apart (as --ignore)
            group: {experiment: mtgrec/office_cpu}   # pick one group of seeds when there are several
            key: [results, hotpotqa_qwen]   # JSON files: the nested object holding the metric
            where: {recipe: authors}        # CSV files: the rows to use
            baseline: {experiment: ..., results: [...], metric: ...}    # comparisons: the baseline's runs

Status rules (`status()`, one per reproduction of a claim)
----------------------------------------------------------
    ours        mean, sample std (ddof 1; none with one seed) and n over the completed runs
    tolerance   max(our std when n >= 2, the paper's std when it quotes one, half a unit in the last
                decimal the paper prints)
    within      |ours - paper| <= tolerance (boundary included); for a quoted range [lo, hi]:
                lo - tolerance <= ours <= hi + tolerance
    separable   both sides have n >= 2 and |a - b| > std_a + std_b (the mean +- std intervals do not
                overlap; equal intervals' edges count as overlapping)
    comparable  the reproduction's scale is `paper` or declared `comparable: true` and it runs on the
                claim's dataset; a CPU stand-in (another dataset, a smaller model) is not comparable

A value claim (one number):
    not run                                   no completed run (the paper.yml says why)
    no paper number                           measured, but the paper's number is not quoted
    not comparable (different dataset/scale)  measured on a stand-in: the ratio is shown, no verdict
    reproduced                                comparable and within
    not reproduced                            comparable and not within

A comparison claim (the paper's method row beats its baseline row):
    not run                                   either side has no completed run
    reproduced                                comparable, both paper numbers quoted and both within
    direction reproduced                      comparable, not reproduced, but ours is separable in the
                                              paper's direction
    not reproduced                            comparable, otherwise
    direction reproduced (different dataset/scale)      stand-in, separable in the paper's direction
    direction not reproduced (different dataset/scale)  stand-in, separable against it
    inconclusive (different dataset/scale)    stand-in, not separable (e.g. one seed on a side)

So nothing measured on a stand-in is ever `reproduced`: only the direction of a comparison carries
over to another dataset or scale.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rucai.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
PAPER_FILE = "paper.yml"
REPORT_MD = Path("reports") / "reproduction.md"
REPORT_HTML = Path("reports") / "reproduction.html"

NOT_RUN = "not run"
NO_PAPER_NUMBER = "no paper number"
NOT_COMPARABLE = "not comparable (different dataset/scale)"
REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
DIRECTION = "direction reproduced"
STANDIN_DIRECTION = "direction reproduced (different dataset/scale)"
STANDIN_AGAINST = "direction not reproduced (different dataset/scale)"
STANDIN_INCONCLUSIVE = "inconclusive (different dataset/scale)"
STATUSES = (REPRODUCED, DIRECTION, NOT_REPRODUCED, STANDIN_DIRECTION, STANDIN_AGAINST, STANDIN_INCONCLUSIVE,
            NOT_COMPARABLE, NO_PAPER_NUMBER, NOT_RUN)

# papers the project lists (README.md, section Papers) that have no experiments/<paper>/README.md yet;
# once it exists, the folder's paper.yml replaces the entry
PLANNED = {"rvsyn": ("RV-Syn", "llm", "no experiments/rvsyn/README.md yet: no paper numbers or results to report")}


# ----------------------------------------------------------------------------------------------
# the status rules (pure)


@dataclass(frozen=True)
class Stat:
    """Our number: mean, sample std (nan with fewer than 2 values) and n over completed runs."""

    mean: float
    std: float = math.nan
    n: int = 1

    @property
    def spread(self) -> float:
        return self.std if self.n >= 2 and not math.isnan(self.std) else 0.0


@dataclass(frozen=True)
class Target:
    """The paper's number: a value, or a range [low, high], or neither (not quoted)."""

    value: float | None = None
    low: float | None = None
    high: float | None = None
    std: float | None = None
    decimals: int | None = None

    @property
    def quoted(self) -> bool:
        return self.value is not None or self.low is not None

    @property
    def rounding(self) -> float:
        return 0.5 * 10.0 ** -self.decimals if self.decimals is not None else 0.0


def tolerance(paper: Target, ours: Stat) -> float:
    return max(ours.spread, paper.std or 0.0, paper.rounding)


def within(ours: Stat, paper: Target) -> bool:
    tol = tolerance(paper, ours) + 1e-12  # the boundary is inside, despite binary fractions
    if paper.value is not None:
        return abs(ours.mean - paper.value) <= tol
    if paper.low is not None:
        return paper.low - tol <= ours.mean <= paper.high + tol
    return False


def separable(a: Stat, b: Stat) -> bool:
    # intervals that touch overlap, despite binary fractions (0.100 - 0.080 > 0.02 in floats)
    return a.n >= 2 and b.n >= 2 and abs(a.mean - b.mean) > a.spread + b.spread + 1e-12


def status(ours: Stat | None, paper: Target, *, comparable: bool, baseline: Stat | None = None,
           paper_baseline: Target | None = None, comparison: bool = False,
           higher_is_better: bool = True) -> str:
    """The status of one reproduction (the rules are in the module docstring).

    `ours`/`paper`: the method's number; with `comparison=True` also `baseline` (ours) and
    `paper_baseline` (the paper's baseline number; Target() when not quoted)."""
    if not comparison:
        if ours is None:
            return NOT_RUN
        if not paper.quoted:
            return NO_PAPER_NUMBER
        if not comparable:
            return NOT_COMPARABLE
        return REPRODUCED if within(ours, paper) else NOT_REPRODUCED
    if ours is None or baseline is None:
        return NOT_RUN
    paper_baseline = paper_baseline or Target()
    gap = ours.mean - baseline.mean
    holds = separable(ours, baseline) and (gap > 0) == higher_is_better
    against = separable(ours, baseline) and (gap > 0) != higher_is_better
    if not comparable:
        return STANDIN_DIRECTION if holds else STANDIN_AGAINST if against else STANDIN_INCONCLUSIVE
    if paper.quoted and paper_baseline.quoted and within(ours, paper) and within(baseline, paper_baseline):
        return REPRODUCED
    return DIRECTION if holds else NOT_REPRODUCED


# ----------------------------------------------------------------------------------------------
# paper.yml


@dataclass(frozen=True)
class Measure:
    """Where a measured number lives: results (run folders / JSON / CSV files) and the metric key."""

    results: tuple[str, ...]
    metric: str
    experiment: str | None = None
    ignore: tuple[str, ...] = ()
    group: tuple[tuple[str, str], ...] = ()
    key: tuple[str, ...] = ()
    where: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Reproduction:
    experiment: str | None
    scale: str
    reason: str | None
    method: Measure | None
    baseline: Measure | None


@dataclass(frozen=True)
class Claim:
    id: str
    claim: str
    source: str
    verified: bool
    verified_note: str | None
    dataset: str
    row: str
    metric: str
    paper: Target
    null_reason: str | None
    baseline_row: str | None
    baseline: Target | None
    higher_is_better: bool
    reproductions: tuple[Reproduction, ...]
    group: str = ""  # the paper.yml entry's id (one entry with `values:` gives a claim per metric)

    @property
    def comparison(self) -> bool:
        return self.baseline_row is not None


@dataclass(frozen=True)
class Scale:
    name: str
    description: str
    dataset: str | None
    comparable: bool
    deviations: tuple[str, ...] = ()


@dataclass
class Paper:
    folder: str
    name: str
    title: str
    reference: str
    area: str
    baseline: bool
    headline: str
    scales: dict[str, Scale]
    claims: list[Claim]
    planned_reason: str | None = None
    plots: list[str] = field(default_factory=list)


_PAPER_KEYS = {"paper", "title", "reference", "area", "baseline", "headline", "decimals", "scales", "claims"}
_CLAIM_KEYS = {"id", "claim", "source", "verified", "verified_note", "dataset", "row", "metric", "value", "range",
               "values", "paper_std", "decimals", "null_reason", "baseline", "higher_is_better", "reproductions"}
_REPRO_KEYS = {"experiment", "scale", "reason", "results", "metric", "ignore", "group", "key", "where", "baseline"}
_MEASURE_KEYS = {"experiment", "results", "metric", "ignore", "group", "key", "where"}
_SCALE_KEYS = {"description", "dataset", "comparable", "deviations"}


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


class _Where:
    """Names the place in a paper.yml for one-line errors."""

    def __init__(self, file: str, what: str = ""):
        self.file, self.what = file, what

    def at(self, what: str) -> _Where:
        return _Where(self.file, f"{self.what}{what}")

    def error(self, msg: str) -> UserError:
        return UserError(f"{self.file}: {self.what + ': ' if self.what else ''}{msg}")


def _need(d: dict, key: str, where: _Where, kind: type | tuple[type, ...] = str) -> Any:
    if key not in d or d[key] is None or (isinstance(d[key], str) and not d[key].strip()):
        raise where.error(f"missing '{key}'")
    if not isinstance(d[key], kind) or (kind is str and isinstance(d[key], bool)):
        raise where.error(f"'{key}' must be {getattr(kind, '__name__', kind)}, not {d[key]!r}")
    return d[key]


def _only(d: Any, keys: set[str], where: _Where) -> dict:
    if not isinstance(d, dict):
        raise where.error(f"expected a mapping, not {d!r}")
    if unknown := sorted(set(d) - keys):
        raise where.error(f"unknown key '{unknown[0]}' (known: {', '.join(sorted(keys))})")
    return d


def _number(v: Any, what: str, where: _Where) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise where.error(f"'{what}' must be a number or null, not {v!r}")
    return float(v)


def _decimals(v: float | None, explicit: Any) -> int | None:
    if explicit is not None:
        return int(explicit)
    if v is None:
        return None
    text = repr(float(v))
    return 0 if "e" in text or "." not in text else len(text.split(".")[1].rstrip("0")) or 0


def _target(d: dict, metric: str | None, where: _Where, decimals: Any) -> Target:
    """The paper's number for `metric` from `value`/`range`/`values` in `d`."""
    if "values" in d:
        values = d["values"]
        if not isinstance(values, dict) or metric not in values:
            raise where.error(f"'values' has no '{metric}'")
        v = _number(values[metric], f"values.{metric}", where)
        return Target(value=v, std=_number(d.get("paper_std"), "paper_std", where), decimals=_decimals(v, decimals))
    if "range" in d:
        r = d["range"]
        if not (isinstance(r, list) and len(r) == 2):
            raise where.error(f"'range' must be [low, high], not {r!r}")
        lo, hi = (_number(x, "range", where) for x in r)
        if lo is None or hi is None or lo > hi:
            raise where.error(f"'range' must be [low, high] with low <= high, not {r!r}")
        return Target(low=lo, high=hi, decimals=max(_decimals(lo, decimals) or 0, _decimals(hi, decimals) or 0))
    if "value" not in d:
        raise where.error("missing 'value' (null when the paper's number is not quoted, with 'null_reason')")
    v = _number(d["value"], "value", where)
    return Target(value=v, std=_number(d.get("paper_std"), "paper_std", where), decimals=_decimals(v, decimals))


def _strings(v: Any, what: str, where: _Where) -> tuple[str, ...]:
    if v is None:
        return ()
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
        raise where.error(f"'{what}' must be a list of strings, not {v!r}")
    return tuple(v)


def _pairs(v: Any, what: str, where: _Where) -> tuple[tuple[str, str], ...]:
    if v is None:
        return ()
    if not isinstance(v, dict):
        raise where.error(f"'{what}' must be a mapping, not {v!r}")
    return tuple(sorted((str(k), str(x)) for k, x in v.items()))


def _measure(d: dict, metric: str, where: _Where, experiments: set[str]) -> Measure:
    results = _strings(_need(d, "results", where, (list, str)), "results", where)
    template = _need(d, "metric", where)
    exp = d.get("experiment")
    if exp is not None and exp not in experiments:
        raise where.error(f"unknown experiment '{exp}' (python run.py --help lists them)")
    return Measure(results=results, metric=template.replace("{metric}", metric), experiment=exp,
                   ignore=_strings(d.get("ignore"), "ignore", where), group=_pairs(d.get("group"), "group", where),
                   key=_strings(d.get("key"), "key", where), where=_pairs(d.get("where"), "where", where))


def _reproduction(d: Any, metric: str, comparison: bool, scales: dict[str, Scale], where: _Where,
                  experiments: set[str]) -> Reproduction:
    d = _only(d, _REPRO_KEYS, where)
    if "experiment" not in d:
        raise where.error("missing 'experiment' (null when no experiment exists, with 'reason')")
    exp = d["experiment"]
    if exp is not None and (not isinstance(exp, str) or exp not in experiments):
        raise where.error(f"unknown experiment {exp!r} (python run.py --help lists them)")
    scale = _need(d, "scale", where)
    if scale not in scales:
        raise where.error(f"unknown scale '{scale}' (this file's scales: {', '.join(sorted(scales))})")
    if "baseline" in d and not comparison:
        raise where.error("'baseline' runs given, but the claim has no baseline row")
    method = base = None
    if "results" in d:
        method = _measure({**{k: v for k, v in d.items() if k in _MEASURE_KEYS}, "experiment": exp}, metric,
                          where, experiments)
    if "baseline" in d:
        w = where.at(" baseline")
        base = _measure(_only(_need(d, "baseline", where, dict), _MEASURE_KEYS, w), metric, w, experiments)
    if method is None or (comparison and base is None):
        _need(d, "reason", where.at(" (not run)"))  # why a side has no results
    return Reproduction(exp, scale, d.get("reason"), method, base)


def _claims(d: Any, i: int, scales: dict[str, Scale], decimals: Any, where: _Where,
            experiments: set[str]) -> list[Claim]:
    where = where.at(f"claims[{i}]")
    d = _only(d, _CLAIM_KEYS, where)
    cid = _need(d, "id", where)
    where = _Where(where.file, f"claim '{cid}'")
    text, source, dataset, row = (_need(d, k, where) for k in ("claim", "source", "dataset", "row"))
    verified = _need(d, "verified", where, bool)
    note = d.get("verified_note")
    if not verified and not note:
        raise where.error("missing 'verified_note' (where the number was read, when not in the paper)")
    if "values" in d:
        if "metric" in d or "value" in d:
            raise where.error("give either 'values' or 'metric' with 'value', not both")
        if not isinstance(d["values"], dict) or not d["values"]:
            raise where.error("'values' must map metrics to numbers")
        metrics = [str(m) for m in d["values"]]
    else:
        metrics = [_need(d, "metric", where)]
    decimals = d.get("decimals", decimals)
    base = d.get("baseline")
    if base is not None:
        base = _only(base, {"row", "value", "values", "range", "paper_std", "decimals"}, where.at(" baseline"))
        _need(base, "row", where.at(" baseline"))
    repros = d.get("reproductions")
    if not isinstance(repros, list) or not repros:
        raise where.error("missing 'reproductions' (a list; a not-run entry gives its 'reason')")
    out = []
    for m in metrics:
        paper = _target(d, m, where, decimals)
        if not paper.quoted and not d.get("null_reason"):
            raise where.error("the paper's number is null: give 'null_reason' (why it is not quoted)")
        btarget = _target(base, m, where.at(" baseline"), base.get("decimals", decimals)) if base else None
        rs = tuple(_reproduction(r, m, base is not None, scales, where.at(f" reproductions[{j}]"), experiments)
                   for j, r in enumerate(repros))
        out.append(Claim(id=cid if len(metrics) == 1 and "values" not in d else f"{cid}/{m}", claim=text,
                         source=source, verified=verified, verified_note=note, dataset=dataset, row=row, metric=m,
                         paper=paper, null_reason=d.get("null_reason"), baseline_row=base["row"] if base else None,
                         baseline=btarget, higher_is_better=bool(d.get("higher_is_better", True)),
                         reproductions=rs, group=cid))
    return out


def load_paper(path: Path, root: Path, experiments: set[str] | None = None) -> Paper:
    """Read and check one paper.yml; a problem is a UserError naming the file."""
    import yaml

    rel = _rel(path, root)
    where = _Where(rel)
    if experiments is None:
        experiments = _experiments(root)
    try:
        d = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise where.error("missing (every experiments/<paper>/ with a README.md needs one)") from None
    except yaml.YAMLError as e:
        raise where.error(f"not valid YAML: {' '.join(str(e).split())}") from None
    if isinstance(d, dict):  # top-level keys starting with _ only hold YAML anchors
        d = {k: v for k, v in d.items() if not str(k).startswith("_")}
    d = _only(d, _PAPER_KEYS, where)
    name, title, reference, area, headline = (_need(d, k, where) for k in
                                              ("paper", "title", "reference", "area", "headline"))
    if area not in ("rec", "llm"):
        raise where.error(f"'area' must be rec or llm, not {area!r}")
    scales = {"paper": Scale("paper", "the paper's settings (GPUs where the paper used them)", None, True)}
    for sname, s in (d.get("scales") or {}).items():
        w = where.at(f"scales.{sname}")
        s = _only(s, _SCALE_KEYS, w)
        comparable = bool(s.get("comparable", sname == "paper"))
        devs = _strings(s.get("deviations"), "deviations", w)
        if not comparable and not devs:
            raise w.error("a stand-in scale lists its 'deviations' from the paper")
        scales[sname] = Scale(sname, _need(s, "description", w), s.get("dataset"), comparable, devs)
    claims_raw = d.get("claims")
    if not isinstance(claims_raw, list) or not claims_raw:
        raise where.error("missing 'claims' (a list)")
    claims = [c for i, raw in enumerate(claims_raw)
              for c in _claims(raw, i, scales, d.get("decimals"), where, experiments)]
    ids = [c.id for c in claims]
    if dup := sorted({i for i in ids if ids.count(i) > 1}):
        raise where.error(f"claim id '{dup[0]}' is used twice")
    if headline not in ids:
        raise where.error(f"headline '{headline}' is no claim id (ids: {', '.join(ids[:6])}...)")
    return Paper(folder=path.parent.name, name=name, title=title, reference=reference, area=area,
                 baseline=bool(d.get("baseline", False)), headline=headline, scales=scales, claims=claims)


def _experiments(root: Path) -> set[str]:
    from rucai import cli

    exp_dir = root / "experiments"
    return set(cli.options(exp_dir)) if exp_dir.is_dir() else set()


def load_papers(root: Path) -> list[Paper]:
    """Every experiments/<paper>/paper.yml (a folder with a README.md must have one), plus the
    papers the project plans but has no folder for yet (`PLANNED`), sorted baselines, rec, llm."""
    exp_dir = root / "experiments"
    if not exp_dir.is_dir():
        raise UserError(f"{_rel(exp_dir, root)}: no such folder: run from the repository root or pass --root")
    experiments = _experiments(root)
    papers = []
    for folder in sorted(p for p in exp_dir.iterdir() if p.is_dir() and (p / "README.md").is_file()):
        paper = load_paper(folder / PAPER_FILE, root, experiments)
        paper.plots = sorted(_rel(p, root) for p in (folder / "results").rglob("*.png")) \
            if (folder / "results").is_dir() else []
        papers.append(paper)
    have = {p.folder for p in papers}
    for folder, (name, area, reason) in sorted(PLANNED.items()):
        if folder not in have:
            papers.append(Paper(folder=folder, name=name, title="-", reference="-", area=area, baseline=False,
                                headline="", scales={}, claims=[], planned_reason=reason))
    if not papers:
        raise UserError(f"{_rel(exp_dir, root)}: no paper folders (experiments/<paper>/README.md)")
    return sorted(papers, key=lambda p: (not p.baseline, p.area != "rec", p.folder))


# ----------------------------------------------------------------------------------------------
# measured numbers, aggregated by the results command's code


@dataclass(frozen=True)
class Measured:
    stat: Stat | None
    seeds: str
    dates: tuple[str, ...]
    machine: str
    where: str


def _json_rows(path: Path, m: Measure, root: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{_rel(path, root)}: not valid JSON ({e})") from None
    top = data if isinstance(data, dict) and m.key else {}  # the file's own record (date, machine) too
    for k in m.key:
        if not isinstance(data, dict) or k not in data:
            raise UserError(f"{_rel(path, root)}: no key {'.'.join(m.key)!r}")
        data = data[k]
    if not isinstance(data, dict):
        raise UserError(f"{_rel(path, root)}: {'.'.join(m.key) or 'the file'} is not an object of metrics")
    row = {k: v for k, v in top.items() if isinstance(v, int | float | str | bool) or v is None}
    row |= {k: v for k, v in data.items() if isinstance(v, int | float | str | bool) or v is None}
    row.setdefault("status", "completed")  # a results file without a status records a finished measurement
    return [{"run": _rel(path, root), **row}]


def _csv_rows(path: Path, m: Measure, root: Path) -> list[dict]:
    import pandas as pd

    try:
        df = pd.read_csv(path, dtype=str)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise UserError(f"{_rel(path, root)}: not a readable CSV ({' '.join(str(e).split())})") from None
    for k, v in m.where:
        if k not in df:
            raise UserError(f"{_rel(path, root)}: no column '{k}'")
        df = df[df[k] == v]
    if df.empty:
        raise UserError(f"{_rel(path, root)}: no row with {dict(m.where)}")
    rows = []
    for i, r in df.iterrows():
        row = {"run": f"{_rel(path, root)}:{i}", "status": "completed"}
        for k, v in r.items():
            try:
                row[k] = float(v)
            except (TypeError, ValueError):
                row[k] = v
        rows.append(row)
    return rows


def _provenance(paths: list[Path], df, root: Path) -> tuple[tuple[str, ...], str]:
    """(dates, machine) of the measurement: the runs' end (or start) dates from their records,
    else command.txt's `date:`; the machine from command.txt's `machine:`, else the records' host."""
    dates = set()
    for record in df.to_dict("records"):  # each run's end, else start, else its own date
        when = next((str(record[c]) for c in ("end_time", "start_time", "date")
                     if isinstance(record.get(c), str) and re.match(r"\d{4}-\d{2}-\d{2}", record[c])), None)
        if when:
            dates.add(when[:10])
    run_dates = bool(dates)
    machines = set()
    commands: set[Path] = set()
    for p in paths:
        folder = p if p.is_dir() else p.parent
        commands |= set(folder.rglob("*command.txt")) if p.is_dir() else set()
        for parent in [folder, *folder.parents]:
            commands |= set(parent.glob("*command.txt"))
            if parent.name == "results" or parent == root:
                break
    for c in sorted(commands):
        for line in c.read_text(errors="replace").splitlines():
            if m := re.search(r"\bmachine:\s*([^(;]+)", line):
                machines.add(m.group(1).strip().rstrip(","))
            if (m := re.search(r"\bdate:\s*(\d{4}-\d{2}-\d{2})", line)) and not run_dates:
                dates.add(m.group(1))
    if not machines:
        for col in ("machine", "host"):
            if col in df:
                machines |= {str(v) for v in df[col].dropna()}
    return tuple(sorted(dates)), "; ".join(sorted(machines)) or "-"


def measure(m: Measure, root: Path, where: _Where) -> Measured:
    """Our number for `m`: the runs under its results, grouped and aggregated over seeds exactly as
    `python -m rucai.results <results> --ignore <ignore> --metrics <metric>` does."""
    import pandas as pd

    from rucai import results

    dirs: list[Path] = []
    files: list[Path] = []
    for pattern in m.results:
        if any(c in pattern for c in "*?["):
            found = sorted(root.glob(pattern))
        else:
            found = [root / pattern] if (root / pattern).exists() else []
        if not found:
            raise where.error(f"results '{pattern}': no such file or folder")
        for p in found:
            (dirs if p.is_dir() else files).append(p)
    frames, overrides = [], []
    if dirs:
        df = results.collect(*dirs)
        if df.empty:
            raise where.error(f"no runs (metrics.json) under {' '.join(_rel(d, root) for d in dirs)}")
        bad = df[df["status"].astype(str).eq("unreadable metrics.json")] if "status" in df else df.iloc[:0]
        if len(bad):
            raise UserError(f"{_rel(dirs[0], root)}/{bad['run'].iloc[0]}/metrics.json: not valid JSON "
                            f"({bad['error'].iloc[0]})")
        overrides = list(df.attrs.get("overrides", []))
        frames.append(df)
    for f in files:
        if f.suffix == ".json":
            frames.append(pd.DataFrame(_json_rows(f, m, root)))
        elif f.suffix == ".csv":
            frames.append(pd.DataFrame(_csv_rows(f, m, root)))
        else:
            raise where.error(f"results '{_rel(f, root)}': a run folder, a .json or a .csv file")
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    df.attrs["overrides"] = [o for o in overrides if o not in m.ignore]
    if missing := [k for k in m.ignore if k not in df.columns]:
        raise where.error(f"ignore '{missing[0]}': no run has that override")
    df = df.drop(columns=list(m.ignore))
    df.attrs["overrides"] = [o for o in overrides if o not in m.ignore]
    shown = " ".join(_rel(p, root) for p in dirs + files)
    if m.metric not in df.columns:
        have = ", ".join(results.metric_columns(df)) or "none"
        raise where.error(f"no run under {shown} has metric '{m.metric}' (metrics found: {have})")
    table = results.seeds_table(df, [m.metric])
    for k, v in m.group:
        if k not in table.columns:
            raise where.error(f"group '{k}': the runs under {shown} do not differ in it")
        table = table[table[k].astype(str) == v]
    if len(table) != 1:
        raise where.error(f"{len(table)} groups of seeds under {shown} (give 'group:' or 'ignore:' to pick one)")
    row = table.iloc[0]
    n = int(row[f"{m.metric} n"])
    mean, std = float(row[f"{m.metric} mean"]), float(row[f"{m.metric} std"])
    stat = Stat(mean, std, n) if n else None
    if "status" in df and n:
        df = df[df["status"].eq("completed")]
    dates, machine = _provenance(dirs + files, df, root)
    return Measured(stat, str(row.get("seeds", "")), dates, machine, f"{shown} `{m.metric}`")


# ----------------------------------------------------------------------------------------------
# the report


@dataclass(frozen=True)
class Row:
    claim: Claim
    index: int  # which of the claim's reproductions
    repro: Reproduction
    scale: Scale
    comparable: bool
    ours: Measured | None
    base: Measured | None
    status: str


def evaluate(paper: Paper, root: Path) -> list[Row]:
    rows = []
    for c in paper.claims:
        for j, r in enumerate(c.reproductions):
            where = _Where(f"experiments/{paper.folder}/{PAPER_FILE}", f"claim '{c.id}' reproductions[{j}]")
            scale = paper.scales[r.scale]
            comparable = scale.comparable and (scale.dataset is None or scale.dataset == c.dataset)
            ours = measure(r.method, root, where) if r.method else None
            base = measure(r.baseline, root, where.at(" baseline")) if r.baseline else None
            st = status(ours.stat if ours else None, c.paper, comparable=comparable,
                        baseline=base.stat if base else None, paper_baseline=c.baseline,
                        comparison=c.comparison, higher_is_better=c.higher_is_better)
            rows.append(Row(c, j, r, scale, comparable, ours, base, st))
    return rows


def _fmt_target(t: Target | None) -> str:
    if t is None or not t.quoted:
        return "not quoted"
    d = t.decimals if t.decimals is not None else 4
    if t.value is not None:
        return f"{t.value:.{d}f}" + (f" ± {t.std:.{d}f}" if t.std else "")
    return f"{t.low:.{d}f}-{t.high:.{d}f}"


def _fmt_stat(s: Stat | None) -> str:
    if s is None:
        return "-"
    return f"{s.mean:.4f}" + (f" ± {s.std:.4f}" if s.n >= 2 and not math.isnan(s.std) else "")


def _ratio(s: Stat | None, t: Target | None) -> str:
    if s is None or t is None or t.value is None or t.value == 0:
        return "-"
    return f"{s.mean / t.value:.2f}"


def _paper_cell(c: Claim) -> str:
    cell = _fmt_target(c.paper)
    if c.comparison:
        cell += f" vs {c.baseline_row} {_fmt_target(c.baseline)}"
    return cell


def _ours_cell(r: Row) -> str:
    m = r.ours.stat if r.ours else None
    b = r.base.stat if r.base else None
    if m is None and b is None:
        return "-"
    cell = f"{_fmt_stat(m)} (n={m.n})" if m else "-"
    if r.claim.comparison:
        cell += f" vs {_fmt_stat(b)} (n={b.n})" if b else " vs -"
    return cell


def _status_cell(r: Row) -> str:
    if r.status == NOT_RUN:
        reason = r.repro.reason or "no completed run under its results"
        return f"**{NOT_RUN}**: {reason}"
    return f"**{r.status}**"


def _experiment_cell(r: Row) -> str:
    exp = f"`{r.repro.experiment}`" if r.repro.experiment else "(no experiment)"
    return f"{exp}, {r.scale.name}"


def _dates(dates) -> str:
    d = sorted(set(dates))
    return "" if not d else d[0] if len(d) == 1 else f"{d[0]} to {d[-1]}"


def _measured(r: Row) -> bool:
    return r.ours is not None or r.base is not None


# a tiny document model rendered to Markdown and to HTML, so both say the same thing
Block = tuple


def _groups(items: list, key) -> list[list]:
    """`items` split into runs of equal `key`, in order."""
    out: list[list] = []
    for it in items:
        if out and key(out[-1][0]) == key(it):
            out[-1].append(it)
        else:
            out.append([it])
    return out


def _paper_table(paper: Paper) -> Block:
    rows = []
    for cs in _groups(paper.claims, lambda c: c.group):
        c = cs[0]
        ver = "yes" if c.verified else f"no: {c.verified_note}"
        numbers = "; ".join(f"{x.metric}: {_paper_cell(x)}" for x in cs)
        nulls = sorted({x.null_reason for x in cs if not x.paper.quoted and x.null_reason})
        if nulls:
            numbers += f" ({'; '.join(nulls)})"
        rows.append([f"`{c.group}`", c.claim, c.row, c.dataset, numbers, c.source, ver])
    return ("table", ["claim", "what", "row", "dataset", "paper", "source", "read in the paper"], rows)


def _ours_table(rows: list[Row]) -> Block:
    table = []
    order = {g: i for i, g in enumerate(dict.fromkeys(r.claim.group for r in rows))}
    rows = sorted(rows, key=lambda r: (order[r.claim.group], r.index))  # stable: metrics keep their order
    # a reproduction that measured nothing is one line for all the metrics of its paper.yml entry
    for rs in _groups(rows, lambda r: (r.claim.group, r.index, _measured(r))):
        for r in (rs if _measured(rs[0]) else rs[:1]):
            m = r.ours
            name = r.claim.id if _measured(r) or len(rs) == 1 else \
                f"{r.claim.group} ({', '.join(x.claim.metric for x in rs)})"
            measured = "-" if m is None else m.where
            if r.base:
                measured += f"; baseline: {r.base.where}"
            seeds = " vs ".join(x.seeds for x in (r.ours, r.base) if x and x.stat) or "-"
            dates = _dates(d for x in (r.ours, r.base) if x for d in x.dates)
            machine = "; ".join(sorted({x.machine for x in (r.ours, r.base) if x}))
            ratio = _ratio(m.stat if m else None, r.claim.paper)
            if ratio != "-" and not r.comparable:
                ratio += " (stand-in)"
            table.append([f"`{name}`", _experiment_cell(r), _ours_cell(r), ratio, seeds, dates or "-",
                          machine or "-", measured, _status_cell(r)])
    return ("table", ["claim", "experiment, scale", "ours (mean ± std, n)", "ours/paper", "seeds", "date",
                      "machine", "measured in", "status"], table)


def _paper_blocks(paper: Paper, rows: list[Row]) -> list[Block]:
    blocks: list[Block] = [("h2", f"{paper.name} (`experiments/{paper.folder}/`)")]
    if paper.planned_reason:
        blocks.append(("p", f"**{NOT_RUN}**: {paper.planned_reason}."))
        return blocks
    blocks.append(("p", f"*{paper.title}* ({paper.reference}). Commands, method and discussion: "
                        f"[experiments/{paper.folder}/README.md](../experiments/{paper.folder}/README.md)."))
    used = sorted({r.scale.name for r in rows}, key=lambda s: (s != "paper", s))
    items = []
    for s in (paper.scales[n] for n in used):
        kind = "comparable with the paper" if s.comparable else "stand-in, not comparable with the paper"
        text = f"`{s.name}` ({kind}): {s.description}"
        if s.dataset:
            text += f" Dataset: {s.dataset}."
        if s.deviations:
            text += " Deviations: " + "; ".join(s.deviations) + "."
        items.append(text)
    blocks += [("h3", "Scales"), ("ul", items), ("h3", "The paper's numbers"), _paper_table(paper),
               ("h3", "Ours"), _ours_table(rows)]
    if paper.plots:
        blocks.append(("h3", "Plots committed with the results"))
        blocks += [("img", p, f"../{p}") for p in paper.plots]
    return blocks


def _counts(rows: list[Row]) -> str:
    counts = {s: sum(r.status == s for r in rows) for s in STATUSES}
    return ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "-"


def _glance(papers: list[Paper], results: dict[str, list[Row]]) -> Block:
    table = []
    for p in papers:
        rows = results[p.folder]
        if p.planned_reason:
            table.append([p.name, "-", "-", f"**{NOT_RUN}**: {p.planned_reason}", "-", "-", "1 not run (paper)"])
            continue
        head = [r for r in rows if r.claim.id == p.headline]
        c = head[0].claim
        comp = [r for r in head if r.comparable]
        stand = [r for r in head if not r.comparable]

        def cell(rs: list[Row]) -> str:
            parts = []
            for r in rs:
                ours = _ours_cell(r)
                parts.append(_status_cell(r) + (f" ({r.scale.name}: {ours})" if ours != "-" else ""))
            return "<br>".join(parts) if parts else "-"

        ratio = next((_ratio(r.ours.stat, c.paper) + ("" if r.comparable else " (stand-in)")
                      for r in head if r.ours and r.ours.stat and c.paper.value), "-")
        table.append([f"[{p.name}](#{_anchor(p)})", f"{c.claim} ({c.dataset}, {c.metric})", _paper_cell(c),
                      cell(comp), cell(stand), ratio, _counts(rows)])
    return ("table", ["paper", "headline claim", "paper's number", "at the paper's setting", "on a stand-in",
                      "ours/paper", "all claim rows"], table)


def _anchor(p: Paper) -> str:
    return f"paper-{p.folder}"


def _rules_block() -> list[Block]:
    doc = __doc__.split("Status rules (`status()`, one per reproduction of a claim)")[1]
    lines = [ln[4:] if ln.startswith("    ") else ln for ln in doc.splitlines()[2:]]
    return [("h2", "Status rules"), ("pre", "\n".join(lines).strip())]


def _unverified(papers: list[Paper]) -> list[Block]:
    items = []
    for p in papers:
        secondary = sum(1 for c in p.claims if not c.verified and c.paper.quoted)
        missing = sorted({f"`{c.group}` ({c.null_reason})" for c in p.claims if not c.paper.quoted})
        verified = sum(1 for c in p.claims if c.verified and c.paper.quoted)
        if p.planned_reason:
            continue
        text = f"{p.name}: {verified} number(s) read in the paper, {secondary} unverified"
        if missing:
            text += "; not quoted: " + "; ".join(missing)
        items.append(text)
    return [("h2", "Where the paper numbers come from"),
            ("p", "`verified` is true only where a paper's README says it read the number in the paper itself; "
                  "each row's note says where it was read otherwise."), ("ul", items)]


def build(root: Path = ROOT) -> tuple[str, str]:
    """The report as (markdown, html) from the files under `root`."""
    root = Path(root)
    papers = load_papers(root)
    results = {p.folder: evaluate(p, root) for p in papers}
    all_rows = [r for rows in results.values() for r in rows]
    blocks: list[Block] = [
        ("h1", "Reproduction report"),
        ("p", "Generated by `python -m rucai.report` from `experiments/<paper>/paper.yml` (the papers' numbers, "
              "as the papers' READMEs quote them) and the run artefacts committed under "
              "`experiments/<paper>/results/` (ours: mean ± sample std over seeds, as `python -m rucai.results` "
              "aggregates them). Do not edit: CI checks it with `python -m rucai.report --check`."),
        ("h2", "All papers at a glance"),
        _glance(papers, results),
        ("p", f"All {len(all_rows)} claim rows: {_counts(all_rows)}."),
        *_rules_block(),
    ]
    for p in papers:
        blocks += [("anchor", _anchor(p)), *_paper_blocks(p, results[p.folder])]
    blocks += _unverified(papers)
    return render_markdown(blocks), render_html(blocks)


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            out += ["#" * int(kind[1]) + " " + b[1], ""]
        elif kind == "p":
            out += [b[1], ""]
        elif kind == "pre":
            out += ["```", b[1], "```", ""]
        elif kind == "ul":
            out += [f"- {item}" for item in b[1]] + [""]
        elif kind == "table":
            header, rows = b[1], b[2]
            out.append("| " + " | ".join(map(_md_cell, header)) + " |")
            out.append("|" + "---|" * len(header))
            out += ["| " + " | ".join(map(_md_cell, r)) + " |" for r in rows]
            out.append("")
        elif kind == "img":
            out += [f"![{b[1]}]({b[2]})", ""]
        elif kind == "anchor":
            out += [f'<a id="{b[1]}"></a>', ""]
    return "\n".join(out).rstrip() + "\n"


_INLINE = re.compile(r"`([^`]+)`|\*\*([^*]+)\*\*|\*([^*]+)\*|\[([^\]]+)\]\(([^)]+)\)|<br>")


def _inline(text: str) -> str:
    """The few Markdown inline forms the report uses (code, bold, italics, links, <br>) as HTML."""
    out, pos = [], 0
    for m in _INLINE.finditer(text):
        out.append(html.escape(text[pos:m.start()]))
        code, bold, em, label, href = m.groups()
        if code is not None:
            out.append(f"<code>{html.escape(code)}</code>")
        elif bold is not None:
            out.append(f"<strong>{_inline(bold)}</strong>")
        elif em is not None:
            out.append(f"<em>{_inline(em)}</em>")
        elif label is not None:
            out.append(f'<a href="{html.escape(href)}">{_inline(label)}</a>')
        else:
            out.append("<br>")
        pos = m.end()
    out.append(html.escape(text[pos:]))
    return "".join(out)


_CSS = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:110em}"
        "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}"
        "th,td{border:1px solid #ccc;padding:0.3em 0.5em;vertical-align:top;text-align:left}"
        "th{background:#f3f3f3}code{background:#f6f6f6;padding:0 0.2em}"
        "img{max-width:48em;display:block;margin:1em 0}pre{background:#f6f6f6;padding:1em;overflow:auto}")


def render_html(blocks: list[Block]) -> str:
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           "<title>Reproduction report</title>", f"<style>{_CSS}</style>", "</head>", "<body>"]
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{_inline(b[1])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{_inline(b[1])}</p>")
        elif kind == "pre":
            out.append(f"<pre>{html.escape(b[1])}</pre>")
        elif kind == "ul":
            out += ["<ul>", *(f"<li>{_inline(i)}</li>" for i in b[1]), "</ul>"]
        elif kind == "table":
            out += ["<table>", "<tr>" + "".join(f"<th>{_inline(h)}</th>" for h in b[1]) + "</tr>"]
            out += ["<tr>" + "".join(f"<td>{_inline(str(c))}</td>" for c in r) + "</tr>" for r in b[2]]
            out.append("</table>")
        elif kind == "img":
            out.append(f'<figure><img src="{html.escape(b[2])}" alt="{html.escape(b[1])}">'
                       f"<figcaption><code>{html.escape(b[1])}</code></figcaption></figure>")
        elif kind == "anchor":
            out.append(f'<a id="{html.escape(b[1])}"></a>')
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------------------------
# command line


def first_difference(committed: str, generated: str) -> tuple[int, str, str] | None:
    """(line number, committed line, generated line) of the first difference, or None."""
    a, b = committed.splitlines(), generated.splitlines()
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else "<end of file>"
        y = b[i] if i < len(b) else "<end of file>"
        if x != y:
            return i + 1, x, y
    return None if committed == generated else (len(a) + 1, "<no final newline>", "")


def _around_difference(a: str, b: str, before: int = 30, after: int = 50) -> tuple[str, str]:
    """The two lines cut to where they first differ (so the changed number shows)."""
    k = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    start = max(0, k - before)

    def cut(s: str) -> str:
        return ("..." if start else "") + s[start:k + after] + ("..." if len(s) > k + after else "")

    return cut(a), cut(b)


def check(root: Path, out: Path) -> str | None:
    """The first difference between the committed report files and a fresh build, or None."""
    md, page = build(root)
    for path, text in ((out / REPORT_MD.name, md), (out / REPORT_HTML.name, page)):
        rel = _rel(path, root)
        if not path.is_file():
            return f"{rel} is missing (generate it: python -m rucai.report)"
        diff = first_difference(path.read_text(), text)
        if diff:
            line, x, y = diff
            x, y = _around_difference(x, y)
            return (f"{rel}:{line} differs from what the committed results give: committed {x!r}, "
                    f"generated {y!r} (regenerate: python -m rucai.report)")
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rucai.report", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[2:20]))
    ap.add_argument("--check", action="store_true",
                    help="regenerate in memory; exit 1 naming the first difference from the committed report")
    ap.add_argument("--root", type=Path, default=ROOT, help="the repository root (default: this checkout)")
    ap.add_argument("--out", type=Path, help="the report folder (default: <root>/reports)")
    args = ap.parse_args(argv)
    root = args.root.resolve()
    out = args.out.resolve() if args.out else root / "reports"
    try:
        if args.check:
            problem = check(root, out)
            if problem:
                print(f"error: {problem}", file=sys.stderr)
                return 1
            print(f"{_rel(out / REPORT_MD.name, root)} and {REPORT_HTML.name} are up to date")
            return 0
        md, page = build(root)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from rucai.utils.io import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / REPORT_MD.name, md)
    atomic_write_text(out / REPORT_HTML.name, page)
    print(f"wrote {_rel(out / REPORT_MD.name, root)} and {_rel(out / REPORT_HTML.name, root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
