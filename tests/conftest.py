"""Shared test fixtures: the parity checkpoints of ../shared/fixtures."""

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if "KERAS_VIT_CACHE" not in os.environ:
    # freeze() builds keras-vit's CPU kernels into the cache on first use: once
    # per test session, in a folder of its own rather than the user's.
    os.environ["KERAS_VIT_CACHE"] = tempfile.mkdtemp(prefix="keras-vit-tests-")
    atexit.register(shutil.rmtree, os.environ["KERAS_VIT_CACHE"], True)

FIXTURES = Path(
    os.environ.get(
        "KERAS_VIT_FIXTURES",
        Path(__file__).resolve().parents[1].parent / "shared" / "fixtures",
    )
)


@pytest.fixture(scope="session")
def fixtures_dir():
    """Path of the shared parity fixtures (read in place, never copied)."""
    if not FIXTURES.is_dir():
        pytest.fail(
            f"Parity fixtures not found at {FIXTURES}; clone next to ../shared "
            "or set KERAS_VIT_FIXTURES."
        )
    return FIXTURES


def fixture_case(name):
    """``(config dict, reference npz)`` of one fixture case, e.g. ``"vit_token"``."""
    case = FIXTURES / name
    config = json.loads((case / "config.json").read_text())
    return config, np.load(case / "reference.npz", allow_pickle=False)


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same random state."""
    import keras

    keras.utils.set_random_seed(1234)
    yield
    keras.config.set_dtype_policy("float32")
