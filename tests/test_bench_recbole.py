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


RECBOLE_LOG = """Thu 03 Dec 2026 13:56:43 INFO  epoch 1 training [time: 30.27s, train loss: 138.7602]
Thu 03 Dec 2026 13:56:45 INFO  epoch 1 evaluating [time: 1.61s, valid_score: 0.003600]
Thu 03 Dec 2026 13:56:45 INFO  \x1b[34mvalid result\x1b[0m:\x20
recall@10 : 0.0082    ndcg@10 : 0.0036
Thu 03 Dec 2026 13:56:45 INFO  Saving current: /tmp/x/ckpt/SASRec.pth
Thu 03 Dec 2026 13:57:58 INFO  \x1b[32mepoch 2 training\x1b[0m [time: 73.19s, train loss: 133.2968]
Thu 03 Dec 2026 13:58:00 INFO  epoch 2 evaluating [time: 1.61s, valid_score: 0.008600]
Thu 03 Dec 2026 13:58:00 INFO  valid result:\x20
recall@10 : 0.0192    ndcg@10 : 0.0086
"""


def test_recbole_log_to_per_epoch_validation_csv(tmp_path):
    from rucai.bench.recbole_sasrec import parse_recbole_log, write_epochs_csv

    rows = parse_recbole_log(RECBOLE_LOG)
    assert rows == [
        {"epoch": 1, "train_sec": 30.27, "train_loss": 138.7602, "val/recall@10": 0.0082, "val/ndcg@10": 0.0036},
        {"epoch": 2, "train_sec": 73.19, "train_loss": 133.2968, "val/recall@10": 0.0192, "val/ndcg@10": 0.0086},
    ]
    write_epochs_csv(rows, tmp_path / "e.csv")
    lines = (tmp_path / "e.csv").read_text().splitlines()
    assert lines[0] == "epoch,train_sec,train_loss,val/recall@10,val/ndcg@10" and lines[2] == "2,73.19,133.2968,0.0192,0.0086"


def test_recbole_tests_its_best_validation_checkpoint():
    # run_recbole(saved=False) would test the last epoch's weights (load_best_model=saved)
    from rucai.bench.recbole_sasrec import RECBOLE_SCRIPT

    assert "saved=True" in RECBOLE_SCRIPT and "saved=False" not in RECBOLE_SCRIPT.replace("with saved=False", "")
    # ... and reloads that checkpoint with a bare torch.load, which torch >= 2.6 refuses by default
    assert "weights_only=False" in RECBOLE_SCRIPT


def test_best_epoch_without_early_stop_is_the_last_top_validation():
    from rucai.bench.recbole_sasrec import recbole_record

    log = RECBOLE_LOG + RECBOLE_LOG.replace("epoch 1 ", "epoch 3 ").replace("epoch 2 ", "epoch 4 ")
    rec = recbole_record(log, 64, 0)
    assert rec["best_epoch"] == 4  # epochs 2 and 4 tie at 0.0086: RecBole keeps the later
    # no "best valid" summary (the run died before it): the best epoch's row
    assert (rec["val/recall@10"], rec["val/ndcg@10"], rec["status"]) == (0.0192, 0.0086, "no test result in the log")


def test_recbole_log_becomes_a_run_folder_rucai_results_reads(tmp_path):
    from rucai.bench.recbole_sasrec import main as bench_main
    from rucai.results import collect

    tail = ("Thu 03 Dec 2026 14:00:00 INFO  Finished training, best eval result in epoch 1\n"
            "Thu 03 Dec 2026 14:00:01 INFO  \x1b[33mbest valid \x1b[0m: OrderedDict([('recall@10', 0.0192), "
            "('ndcg@10', 0.0086)])\n"
            "Thu 03 Dec 2026 14:00:01 INFO  test result: OrderedDict([('recall@10', 0.0175), ('ndcg@10', 0.0081)])\n")
    (tmp_path / "recbole_h64_s0.log").write_text(RECBOLE_LOG + tail)
    (tmp_path / "recbole_h64_s1.log").write_text(RECBOLE_LOG)  # still running / killed: no test result
    assert bench_main(["--records-from", str(tmp_path)]) == 0
    m = json.loads((tmp_path / "recbole_h64_s0" / "metrics.json").read_text())
    assert m["status"] == "completed" and m["seed"] == 0 and m["best_epoch"] == 1 and m["epochs_trained"] == 2
    assert (m["test/recall@10"], m["test/ndcg@10"], m["val/ndcg@10"]) == (0.0175, 0.0081, 0.0086)
    assert m["sec_per_epoch"] == round((30.27 + 73.19) / 2, 3)
    assert (tmp_path / "recbole_h64_s0" / "eval" / "val.csv").is_file() and (tmp_path / "recbole_h64_s0" / "recbole_log.txt").is_file()
    df = collect(tmp_path)
    assert sorted(df["status"]) == ["completed", "no test result in the log"]
