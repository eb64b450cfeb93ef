import csv
import json

import pytest

from rucai.utils.io import append_csv_row, atomic_write_json, atomic_write_text


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    p = tmp_path / "sub" / "metrics.json"
    atomic_write_json(p, {"a": 1})
    atomic_write_json(p, {"a": 2})
    assert json.loads(p.read_text()) == {"a": 2}
    assert [x.name for x in p.parent.iterdir()] == ["metrics.json"]


def test_atomic_write_failure_keeps_old_file(tmp_path):
    p = tmp_path / "x.json"
    atomic_write_text(p, "old")
    with pytest.raises(TypeError):
        atomic_write_text(p, 123)  # type: ignore[arg-type]
    assert p.read_text() == "old"
    assert [x.name for x in tmp_path.iterdir()] == ["x.json"]


def test_append_csv_row_grows_header(tmp_path):
    p = tmp_path / "val.csv"
    append_csv_row(p, {"epoch": 0, "a": 1})
    append_csv_row(p, {"epoch": 1, "a": 2, "b": 3})
    rows = list(csv.DictReader(open(p)))
    assert [r["epoch"] for r in rows] == ["0", "1"] and rows[1]["b"] == "3" and rows[0]["b"] == ""
