"""Archive the small artefacts of finished runs for the repository: `python -m rucai.results_archive`.

    python -m rucai.results_archive RUN_DIR [RUN_DIR ...] --to experiments/<paper>/results/<name> \
        [--command "python run.py ..."] [--machine "2-core VM, shared"] [--exclude 'eval/big_*.csv']

Copies, keeping each run's folder layout, only the small text files a README number is traced to:
*.json, *.jsonl, *.yaml/*.yml, *.csv, *.md, *.txt (metrics.json, .hydra/config.yaml and overrides.yaml,
config_resolved.yaml, eval/val.csv, ...). Never checkpoints: folders named checkpoints/, wandb/,
lightning_logs/, .submitit/ are skipped, and *.ckpt/*.pt are not among the copied suffixes. A file
over 1 MiB stops the archive before anything is copied (`--exclude` it, or keep it elsewhere).

One RUN_DIR goes into --to itself; several go into --to/<folder name of each>. A multirun sweep
folder is one RUN_DIR (its 0/, 1/, ... keep their names). `python -m rucai.results <--to>` then
builds the tables from the archive. `--command` writes command.txt (command, UTC date, machine).
"""

from __future__ import annotations

import argparse
import datetime as dt
import fnmatch
import sys
from pathlib import Path

from rucai.errors import UserError
from rucai.utils.io import atomic_write_text, atomic_writer

SUFFIXES = (".json", ".jsonl", ".yaml", ".yml", ".csv", ".md", ".txt")
SKIP_DIRS = {"checkpoints", "wandb", "lightning_logs", ".submitit", "__pycache__"}
MAX_BYTES = 1 << 20


def small_files(run_dir: Path, exclude: tuple[str, ...] = (), max_bytes: int = MAX_BYTES) -> list[Path]:
    """The files of `run_dir` to archive, relative to it; UserError if one of them is over `max_bytes`."""
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a directory: pass a run or sweep output folder")
    keep, big = [], []
    for p in sorted(run_dir.rglob("*")):
        rel = p.relative_to(run_dir)
        if p.is_symlink() or not p.is_file() or SKIP_DIRS.intersection(rel.parts[:-1]):
            continue
        if p.suffix.lower() not in SUFFIXES or any(fnmatch.fnmatch(str(rel), g) for g in exclude):
            continue
        if p.stat().st_size > max_bytes:
            big.append(f"{rel} ({p.stat().st_size / 2**20:.1f} MiB)")
        keep.append(rel)
    if big:
        raise UserError(f"{run_dir}: over {max_bytes / 2**20:g} MiB, not archived: {', '.join(big)}; "
                        f"pass --exclude for them")
    return keep


def archive(run_dirs: list[Path], to: Path, exclude: tuple[str, ...] = (), command: str | None = None,
            machine: str = "2-core VM, shared") -> list[Path]:
    """Copy the small files of `run_dirs` under `to` (see the module doc); returns the written paths."""
    run_dirs = [Path(d) for d in run_dirs]
    if not run_dirs:
        raise UserError("no run directory given: python -m rucai.results_archive RUN_DIR... --to DIR")
    if len(run_dirs) == 1:
        plan = [(run_dirs[0], Path(to))]
    else:
        names = [d.resolve().name for d in run_dirs]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise UserError(f"several run directories are named {', '.join(dup)}: archive them one at a time "
                            f"with distinct --to folders")
        plan = [(d, Path(to) / n) for d, n in zip(run_dirs, names, strict=True)]
    # check every run before copying anything
    files = [(src, dst, small_files(src, exclude)) for src, dst in plan]
    if not any(f for _, _, f in files):
        raise UserError(f"no {'/'.join(SUFFIXES)} files under {' '.join(map(str, run_dirs))}: is it a run folder?")
    written = []
    for src, dst, rels in files:
        for rel in rels:
            with atomic_writer(dst / rel, "wb") as f:
                f.write((src / rel).read_bytes())
            written.append(dst / rel)
    if command:
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        written.append(atomic_write_text(Path(to) / "command.txt",
                                         f"command: {command}\ndate: {now}\nmachine: {machine}\n"
                                         f"archived from: {' '.join(map(str, run_dirs))}\n"))
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rucai.results_archive", description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[2:]))
    ap.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR")
    ap.add_argument("--to", type=Path, required=True, help="experiments/<paper>/results/<name>")
    ap.add_argument("--exclude", nargs="*", default=[], help="glob(s) of paths relative to a RUN_DIR to leave out")
    ap.add_argument("--command", help="the command that produced the runs: written to command.txt with the date")
    ap.add_argument("--machine", default="2-core VM, shared", help="the machine, for command.txt")
    args = ap.parse_args(argv)
    try:
        written = archive(args.run_dirs, args.to, tuple(args.exclude), args.command, args.machine)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"archived {len(written)} files under {args.to}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
