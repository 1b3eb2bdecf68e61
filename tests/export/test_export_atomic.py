"""An export publishes a version folder completely or not at all."""

import subprocess
import sys
import time

import pytest

import keras_vit.export.onnx
from keras_vit import model_from_checkpoint
from keras_vit.export import ExportParityError, export_model, parity
from keras_vit.export.layout import next_version
from keras_vit_cli import main as cli


def versions(model_dir):
    return (
        sorted(p.name for p in model_dir.iterdir() if p.name.isdigit())
        if model_dir.exists()
        else []
    )


@pytest.fixture(scope="module")
def checkpoint(fixtures_dir):
    return fixtures_dir / "vit_token" / "official.npz"


@pytest.mark.slow
def test_killed_export_leaves_no_version_folder(checkpoint, tmp_path):
    script = (
        "from keras_vit.export.exporter import export_model\n"
        "from keras_vit import model_from_checkpoint\n"
        f"model = model_from_checkpoint({str(checkpoint)!r}, name='vit_token')\n"
        f"export_model(model, {str(tmp_path)!r}, ['saved_model', 'tflite', 'onnx'],"
        " verbose=False)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script])
    model_dir = tmp_path / "vit_token"
    deadline = time.monotonic() + 300
    try:  # kill it halfway: SavedModel staged, TFLite and ONNX not yet
        while not list(model_dir.glob(".tmp-1-*/saved_model.pb")):
            assert process.poll() is None, "the export ended before it could be killed"
            assert time.monotonic() < deadline, "the export never staged its SavedModel"
            time.sleep(0.05)
    finally:
        process.kill()
        process.wait()
    assert versions(model_dir) == []
    assert next_version(model_dir) == 1
    (stale,) = model_dir.glob(".tmp-1-*")  # the killed export's staging folder...
    model = model_from_checkpoint(checkpoint, name="vit_token")
    result = export_model(model, tmp_path, ["saved_model"], verbose=False)
    assert result.version == 1 and not stale.exists()  # ...removed by the next export
    assert [p.name for p in model_dir.iterdir()] == ["1"]


def test_failed_conversion_cleans_up(checkpoint, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("injected conversion failure")

    monkeypatch.setattr(keras_vit.export.onnx, "convert_onnx", broken)
    model = model_from_checkpoint(checkpoint, name="vit_token")
    with pytest.raises(RuntimeError, match="injected"):
        export_model(model, tmp_path, ["saved_model", "onnx"], verbose=False)
    assert list((tmp_path / "vit_token").iterdir()) == []


def test_parity_failure_publishes_nothing_and_exits_1(checkpoint, tmp_path, monkeypatch, capsys):
    model = model_from_checkpoint(checkpoint, name="vit_token")
    model.save(tmp_path / "vit_token.keras")
    impossible = dict(atol=-1.0, rtol=0.0, min_agreement=1.0)
    monkeypatch.setitem(parity.TOLERANCES, "saved_model", impossible)
    with pytest.raises(ExportParityError, match="saved_model .* FAIL"):
        export_model(model, tmp_path / "api", ["saved_model"], verbose=False)
    assert list((tmp_path / "api" / "vit_token").iterdir()) == []

    code = cli.main(
        [
            "export",
            "--model",
            str(tmp_path / "vit_token.keras"),
            "--output",
            str(tmp_path / "cli"),
            "--model-name",
            "digits",
        ]
    )
    assert code == 1
    assert "FAIL" in capsys.readouterr().err
    assert versions(tmp_path / "cli" / "digits") == []
