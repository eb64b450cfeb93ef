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
    groups = {p.name: p for p in CONF_DIR.iterdir()
              if p.is_dir() and p.name not in ("hydra", "local") and not p.name.endswith("_debug")}
    groups["experiment"] = EXPERIMENTS_DIR
    return groups


def options(group_dir: Path) -> list[str]:
    """A group's options; `debug/` folders hold a paper's debug overlays and `results/` folders a
    paper's committed run artefacts (resolved configs included), not options."""
    return sorted(str(p.relative_to(group_dir).with_suffix("")) for p in group_dir.rglob("*.yaml")
                  if not {"debug", "results"} & set(p.relative_to(group_dir).parts[:-1]))


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


_PASSTHROUGH_FLAGS = ("--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c", "--shell-completion", "-sc",
                      "--version")


def _first_of_sweeps(argv: list[str]) -> list[str]:
    """Overrides with each sweep (a,b / range(...) / choice(...)) replaced by its first value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    out = []
    for arg in argv:
        ov = parser.parse_override(arg)
        if ov.is_sweep_override():
            first = next(iter(ov.sweep_string_iterator()))
            out.append(f"{ov.get_key_element()}={first}")
        else:
            out.append(arg)
    return out


def _one_line(e: BaseException) -> str:
    text = str(e)
    if e.__cause__ is not None and str(e.__cause__) not in text:
        text += "\n" + str(e.__cause__)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    keep = [ln for ln in lines if not ln.startswith(("full_key:", "object_type=", "Config search path",
                                                        "provider=", "path="))]
    return " ".join(keep[:3]) or type(e).__name__


def check_composes(argv: list[str]) -> str | None:
    """Compose the config once (first value of each sweep) and return a one-line error, if any.

    Catches misspelled keys, wrong types and unknown tasks before any job starts or heavy import.
    """
    if any(a in _PASSTHROUGH_FLAGS or a.startswith("--") for a in argv):
        return None
    overrides = [a for a in argv if not a.startswith("-")]
    from hydra import compose, initialize_config_dir

    from rucai.errors import UserError

    try:
        overrides = _first_of_sweeps(overrides)
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR), job_name="preflight"):
            cfg = compose(config_name="config", overrides=overrides)
        from rucai.registry import get_task

        get_task(cfg.task)
    except UserError as e:
        return str(e)
    except Exception as e:  # Hydra/OmegaConf composition errors
        return _one_line(e)
    return None


def check_launch_mode(argv: list[str]) -> str | None:
    """SLURM profiles submit through Hydra's launcher, which only multirun (-m) uses."""
    multirun = any(a in ("-m", "--multirun") for a in argv)
    if any(a in _PASSTHROUGH_FLAGS for a in argv):  # --cfg / --help only show things
        return None
    for a in argv:
        if a == "cluster=slurm" and not multirun:
            return (f"{a} submits jobs through Hydra's SLURM launcher, which only runs in multirun mode: "
                    f"add -m (python run.py -m {' '.join(argv)})")
    return None


def help_text() -> str:
    """`run.py --help`: the header, usage and footer of conf/hydra/default.yaml and every group's options,
    listed from the file tree (Hydra's own listing walks every folder under experiments/, committed
    results included, as a config group: seconds)."""
    from omegaconf import OmegaConf

    h = OmegaConf.load(CONF_DIR / "hydra" / "default.yaml").help
    lines = [h.header, "", "Usage: python run.py [experiment=<paper>/<name>] [group=option ...] [key=value ...] [-m]",
             "", "== Experiments and config groups (group=option) =="]
    for name, d in sorted(group_dirs().items()):
        lines.append(f"{name}: {', '.join(options(d))}")
    return "\n".join(lines + ["", h.footer])


def preflight(argv: list[str]) -> str | None:
    return check_overrides(argv) or check_launch_mode(argv) or check_composes(argv)
