"""`keras-vit quickstart`: trains on the built-in digits and writes its run files."""

import json

import keras
import numpy as np
import pytest

from keras_vit.data import load_digits
from keras_vit_cli import main as cli

pytestmark = pytest.mark.slow  # conversions and end-to-end runs


def test_quickstart_writes_model_and_metrics(tmp_path, capsys):
    output = tmp_path / "quickstart"
    overrides = ["jit_compile=false", "model.num_layers=1"]
    code = cli.main(["quickstart", "--output", str(output), "--epochs", "1", "--set", *overrides])
    assert code == 0
    out = capsys.readouterr().out
    assert "Test accuracy:" in out
    # The last line names the export folder that was really written, and how to use it.
    version = output / "export" / "digits" / "1"
    assert out.strip().splitlines()[-1] == (
        f"SavedModel for TF Serving: {version}/ "
        f"(keras-vit predict {version} {output / 'digit.png'})"
    )
    assert (version / "saved_model.pb").is_file() and (output / "digit.png").is_file()
    assert not [p for p in output.rglob(".partial-*")]

    metrics = json.loads((output / "metrics.json").read_text())
    keys = ("test_accuracy", "test_loss", "train_seconds", "epochs", "steps", "num_parameters")
    for key in keys:
        assert key in metrics, key
    assert metrics["epochs"] == 1
    assert metrics["steps"] == 1437 // 32  # one epoch of the 80% train split, batch 32
    assert 0.0 <= metrics["test_accuracy"] <= 1.0

    model = keras.saving.load_model(output / "model.keras")  # safe mode
    (_, _), (x_test, y_test) = load_digits()
    logits = model.predict(x_test.astype("float32") / 127.5 - 1.0, verbose=0)
    accuracy = float(np.mean(logits.argmax(-1) == y_test))
    assert abs(accuracy - metrics["test_accuracy"]) < 1e-6
