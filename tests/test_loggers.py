"""The run's CSV log survives a resume (rucai.loggers.csv_logger)."""

import csv


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_csv_logger_keeps_the_rows_before_a_resume(tmp_path):
    from rucai.loggers import csv_logger

    first = csv_logger(save_dir=str(tmp_path))
    first.log_metrics({"train/loss": 1.0, "epoch": 0}, step=10)
    first.log_metrics({"train/loss": 0.8, "epoch": 1}, step=20)
    first.save()
    # the resumed process: a new logger on the same folder, and a metric the first one never logged
    resumed = csv_logger(save_dir=str(tmp_path))
    resumed.log_hyperparams({"lr": 0.1})
    resumed.log_metrics({"train/loss": 0.5, "epoch": 2}, step=30)
    resumed.save()
    resumed.log_metrics({"val/ndcg@10": 0.25, "epoch": 2}, step=30)
    resumed.save()
    rows = _rows(tmp_path / "csv" / "metrics.csv")
    assert [(r["epoch"], r["step"], r["train/loss"]) for r in rows] == [
        ("0", "10", "1.0"), ("1", "20", "0.8"), ("2", "30", "0.5"), ("2", "30", "")]
    assert [r["val/ndcg@10"] for r in rows] == ["", "", "", "0.25"]  # header widened, old rows kept
    assert (tmp_path / "csv" / "hparams.yaml").is_file()


def test_csv_logger_fresh_folder_is_lightnings(tmp_path):
    from rucai.loggers import csv_logger

    lg = csv_logger(save_dir=str(tmp_path / "run"))
    lg.log_metrics({"a": 1.0}, step=0)
    lg.save()
    assert _rows(tmp_path / "run" / "csv" / "metrics.csv") == [{"a": "1.0", "step": "0"}]
