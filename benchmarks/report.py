"""The end of a fresh-process benchmark: its table printed, its rows written as JSON."""

from __future__ import annotations

import os
import time

from keras_vit.atomic import write_json_atomic


def print_and_save(rows, table, json_path, started):
    """Prints ``table`` (the rows' plain text) and writes the rows to ``json_path``.

    Args:
        rows: list of dicts, one per measured configuration.
        table: str, the rows as the script's table.
        json_path: path of the JSON file to write, or None (print only).
        started: ``time.time()`` when the run began; the file records the
            minutes since and the machine's core count.
    """
    print("\n" + table)
    if json_path:
        machine = dict(cores=os.cpu_count(), minutes=round((time.time() - started) / 60, 1))
        write_json_atomic(dict(machine=machine, rows=rows), json_path, indent=1)
