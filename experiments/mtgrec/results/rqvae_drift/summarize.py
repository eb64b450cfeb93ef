"""summary.csv / summary.md from the `<recipe>_e<N>.tokenizers.json` manifests in this folder.

drift K=5: mean over the 4 adjacent pairs of the last 5 epochs; K=25: over the 24 pairs of the last 25.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
COLS = ["recipe", "epochs", "fit_items", "items", "drift_k5", "drift_k5_min", "drift_k5_max", "drift_k25",
        "first_code_k5", "per_level_k5", "per_level_k25", "first_vs_last_k25", "collision_rate_last",
        "usage_last", "recon_loss_final", "seconds_per_epoch"]


def row(path: Path) -> dict:
    m = json.loads(path.read_text())
    adj = m["adjacent_drift"]
    last5 = adj[-4:]
    fin = m["rqvae_final"][0]
    r = {
        "recipe": m["recipe"], "epochs": m["rqvae"]["epochs"], "fit_items": m["fit_items"], "items": m["num_items"],
        "drift_k5": np.mean([d["changed"] for d in last5]),
        "drift_k5_min": min(d["changed"] for d in last5), "drift_k5_max": max(d["changed"] for d in last5),
        "drift_k25": np.mean([d["changed"] for d in adj]),
        "first_code_k5": np.mean([d["changed_first_code"] for d in last5]),
        "per_level_k5": [round(float(v), 3) for v in np.mean([d["changed_per_level"] for d in last5], 0)],
        "per_level_k25": [round(float(v), 3) for v in np.mean([d["changed_per_level"] for d in adj], 0)],
        "first_vs_last_k25": m["first_vs_last_drift"]["changed"],
        "collision_rate_last": m["per_tokenizer"][-1]["collision_rate"],
        "usage_last": [round(u, 3) for u in m["per_tokenizer"][-1]["usage"]],
        "recon_loss_final": fin["recon_loss"], "seconds_per_epoch": fin["seconds_per_epoch"],
    }
    return {k: (round(float(v), 4) if isinstance(v, float | np.floating) else v) for k, v in r.items()}


def main() -> None:
    rows = [row(p) for p in sorted(HERE.glob("*.tokenizers.json"))]
    with open(HERE / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, COLS)
        w.writeheader()
        for r in rows:
            w.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()})
    lines = ["| " + " | ".join(COLS) + " |", "|" + "---|" * len(COLS)]
    lines += ["| " + " | ".join(str(r[c]) for c in COLS) + " |" for r in rows]
    (HERE / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
