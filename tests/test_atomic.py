"""Atomic writes: all-or-nothing, ordinary permissions."""

import json
import os
import stat
from pathlib import Path

import pytest

from keras_vit.atomic import atomic_path, write_bytes_atomic, write_json_atomic


def test_failed_write_leaves_the_old_file_and_no_partial(tmp_path):
    target = tmp_path / "model.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target, ".bin") as partial:
        with open(partial, "wb") as f:
            f.write(b"half")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["model.bin"]


def test_written_file_has_the_permissions_of_a_plain_open(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_bytes(b"x")
    atomic = write_bytes_atomic(b"x", tmp_path / "sub" / "atomic.txt")
    assert stat.S_IMODE(os.stat(atomic).st_mode) == stat.S_IMODE(os.stat(plain).st_mode)


def test_write_json_atomic_round_trips(tmp_path):
    path = write_json_atomic({"accuracy": 0.97, "path": tmp_path}, tmp_path / "m.json")
    assert json.loads(Path(path).read_text()) == {"accuracy": 0.97, "path": str(tmp_path)}
