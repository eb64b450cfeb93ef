"""The RecBole side-by-side benchmark's pure parts (RecBole itself runs in its own environment)."""

import json

from rucai.bench.recbole_sasrec import export_atomic, format_table, main


def test_export_atomic_keeps_sequence_order_as_timestamps(tmp_path):
    (tmp_path / "X.inter.json").write_text(json.dumps({"0": [5, 3, 9], "1": [3, 4]}))
    out = export_atomic(tmp_path, "X", tmp_path / "atomic")
    lines = (out / "office" / "office.inter").read_text().splitlines()
    assert lines[0] == "user_id:token\titem_id:token\ttimestamp:float"
    assert lines[1:] == ["0\t5\t0", "0\t3\t1", "0\t9\t2", "1\t3\t0", "1\t4\t1"]


def _side(sec, r, n, ep):
    return {"sec_per_epoch": sec, "recall@10": r, "ndcg@10": n, "epochs": ep}


def test_table_ratios_means_and_missing_sides():
    rows = [
        {"hidden": 64, "seed": 0, "train_mode": "all_positions", "recbole": _side(60.0, 0.10, 0.05, 49),
         "rucai": _side(12.0, 0.11, 0.06, 40)},
        {"hidden": 64, "seed": 1, "train_mode": "all_positions", "recbole": _side(50.0, 0.12, 0.07, 50), "rucai": None},
    ]
    t = format_table(rows)
    assert "| 64 | 0 | all_positions | 60.00 | 12.00 | 5.00x | 0.1000 | 0.1100 | 0.0500 | 0.0600 | 49/40 |" in t
    assert "| 64 | 1 | all_positions | 50.00 | - | - | 0.1200 | - | 0.0700 | - | 50/- |" in t
    # mean over the seeds each side ran; the speed-up only over seeds with both sides
    assert "| 64 | all_positions | 5.00x | 0.1100 ± 0.0141 (n=2) | 0.1100 ± 0.0000 (n=1) |" in t


def test_missing_recbole_env_is_one_line_error(tmp_path, capsys):
    assert main(["--recbole-python", str(tmp_path / "nope"), "--data-dir", str(tmp_path)]) == 2
    assert "scripts/recbole-env.sh" in capsys.readouterr().err
