"""``benchmarks.report``: a fresh-process benchmark's table printed and its rows saved."""

import json
import time

from benchmarks.report import print_and_save


def test_the_table_is_printed_and_the_rows_are_saved_with_the_machine(tmp_path, capsys):
    rows = [dict(model="B/16", peak_mb=6158)]
    path = tmp_path / "run.json"
    print_and_save(rows, "model peak\nB/16 6158", str(path), time.time() - 90)
    assert capsys.readouterr().out == "\nmodel peak\nB/16 6158\n"
    saved = json.loads(path.read_text())
    assert saved["rows"] == rows
    assert saved["machine"]["cores"] >= 1
    assert saved["machine"]["minutes"] == 1.5


def test_without_a_path_nothing_is_written(tmp_path, capsys):
    print_and_save([], "empty", None, time.time())
    assert capsys.readouterr().out == "\nempty\n"
    assert list(tmp_path.iterdir()) == []
