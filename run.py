"""rucai: run any experiment from one command.

    python run.py                                   # the quickstart experiment
    python run.py experiment=sasrec/office hardware=gpu
    python run.py -m experiment=quickstart model.hidden_size=32,64
    python run.py --help                            # groups, experiments, overrides
"""

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("RUCAI_ROOT", str(ROOT))
sys.path.insert(0, str(ROOT))

from rucai import cli, schema  # noqa: E402  (light imports only: no torch on the CLI path)

schema.register()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from rucai.dispatch import run_task

    return run_task(cfg)


if __name__ == "__main__":
    if any(a in ("--help", "-h") for a in sys.argv[1:]):
        print(cli.help_text())
        sys.exit(0)
    error = cli.preflight(sys.argv[1:])
    if error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    main()
