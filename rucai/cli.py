"""CLI pre-flight: catch misspelled config-group choices before Hydra, with one line and the
closest valid names. Light on purpose (no torch, no Hydra composition)."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = ROOT / "conf"
EXPERIMENTS_DIR = ROOT / "experiments"
_SWEEP_FN = re.compile(r"^\s*(choice|range|interval|glob|tag|sort|shuffle|int|float|str|bool|json_str)\(")


def group_dirs() -> dict[str, Path]:
    groups = {p.name: p for p in CONF_DIR.iterdir() if p.is_dir() and p.name not in ("hydra", "local")}
    groups["experiment"] = EXPERIMENTS_DIR
    return groups


def options(group_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(group_dir).with_suffix("")) for p in group_dir.rglob("*.yaml"))


def experiments() -> list[str]:
    return options(EXPERIMENTS_DIR)


def check_overrides(argv: list[str]) -> str | None:
    """Return a one-line error for the first unknown group choice in `argv`, else None."""
    groups = group_dirs()
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        key = key.lstrip("+~")
        if key.startswith("override "):
            key = key.split(" ", 1)[1]
        if key not in groups or not value or value == "null" or _SWEEP_FN.match(value):
            continue
        valid = options(groups[key])
        for v in (x.strip() for x in value.split(",")):
            if v and v not in valid:
                close = difflib.get_close_matches(v, valid, n=3, cutoff=0.4) or valid[:8]
                return f"unknown {key}={v!r}; closest valid names: {', '.join(close)} (python run.py --help lists all)"
    return None
