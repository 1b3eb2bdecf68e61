"""Bad inputs and faults of the export area: each a clear error, nothing half-written.

Every case asserts the exact class of the outcome and its message (the API's
``ValueError``, the CLI's one ``keras-vit CMD: error: ...`` line with exit 2,
TensorFlow's ``InvalidArgumentError`` inside a served signature) and that no
file or folder was left behind.
"""

import io
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import keras_vit
from keras_vit import extras, model_from_checkpoint
from keras_vit.export import ExportParityError, export_model, layout, load_artifact
from keras_vit.export import exporter as exporter_module
from keras_vit.messages import KerasVitWarning
from keras_vit_cli import main as cli


def tree(folder):
    """Every path under ``folder`` (relative), to show that nothing was written."""
    folder = Path(folder)
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


@pytest.fixture(scope="module")
def model(fixtures_dir):
    return model_from_checkpoint(
        fixtures_dir / "vit_token" / "official.npz", semantics="timm", name="vit_token"
    )


@pytest.fixture(scope="module")
def keras_file(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("keras") / "vit_token.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def pixels(fixtures_dir):
    inputs = np.load(fixtures_dir / "vit_token" / "reference.npz")["inputs"]
    return ((inputs + 1.0) * 127.5).astype("float32")


@pytest.fixture(scope="module")
def export(model, tmp_path_factory):
    """One SavedModel + OpenVINO export, refusing images over 40 x 40 pixels in serve_bytes."""
    return export_model(
        model,
        tmp_path_factory.mktemp("export"),
        ["saved_model", "openvino"],
        max_image_pixels=40 * 40,
        verbose=False,
    )


@pytest.fixture(scope="module")
def signatures(export):
    return tf.saved_model.load(export.path).signatures


def cli_error(capsys, argv):
    """Runs the CLI in-process; returns its one error line (asserting exit 2)."""
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


# -- unsafe and unusable output paths -------------------------------------------------


@pytest.mark.parametrize("name", ["../../escaped", "a/b", "..", ".hidden", "", "x" * 201, "a b"])
def test_model_names_that_are_not_one_folder_are_refused(model, tmp_path, name):
    out = tmp_path / "deep" / "out"
    with pytest.raises(ValueError, match="model_name must be one folder name: .* got "):
        export_model(model, out, ["saved_model"], model_name=name, verbose=False)
    assert tree(tmp_path) == []


def test_cli_model_name_cannot_escape_the_output(keras_file, tmp_path, capsys):
    out = tmp_path / "a" / "b" / "out"
    line = cli_error(
        capsys,
        ["export", "--model", str(keras_file), "--output", str(out), "--model-name", "../../esc"],
    )
    assert line == (
        "keras-vit export: error: model_name must be one folder name: letters, digits, '.', "
        "'_' and '-', starting with a letter or digit, at most 200 characters; got '../../esc'."
    )
    assert tree(tmp_path) == []


def test_output_that_is_a_file_is_refused_before_work(model, keras_file, tmp_path, capsys):
    blocker = tmp_path / "out"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match=r"Cannot export into .*/out: it is a file, not a folder"):
        export_model(model, blocker, ["saved_model"], verbose=False)
    line = cli_error(capsys, ["export", "--model", str(keras_file), "--output", str(blocker)])
    assert line.startswith("keras-vit export: error: Cannot export into") and "a file" in line
    # The model folder itself in the way:
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "vit_token").write_text("in the way")
    with pytest.raises(ValueError, match=r"base/vit_token: it is a file, not a folder"):
        export_model(model, tmp_path / "base", ["saved_model"], verbose=False)
    assert tree(tmp_path) == ["base", "base/vit_token", "out"]
    assert blocker.read_text() == "not a folder"


@pytest.mark.skipif(not Path("/sys").is_dir(), reason="needs Linux' read-only /sys")
def test_read_only_output_is_refused_before_any_conversion(model, monkeypatch):
    # /sys refuses new folders even to root (a chmod-555 folder would not).
    converted = []
    monkeypatch.setattr(exporter_module, "_write", lambda *a, **k: converted.append(a))
    with pytest.raises(ValueError, match=r"Cannot export into /sys/keras_vit_test.*writable"):
        export_model(model, "/sys/keras_vit_test", ["saved_model"], verbose=False)
    assert converted == [] and not Path("/sys/keras_vit_test").exists()


# -- optional dependencies: checked before anything is built --------------------------


def _without(monkeypatch, module):
    real = extras.importlib.util.find_spec
    monkeypatch.setattr(
        extras.importlib.util,
        "find_spec",
        lambda name, *a: None if name == module else real(name, *a),
    )


@pytest.mark.parametrize(
    "formats, quantize, module, extra",
    [
        (["saved_model", "tflite", "onnx"], [], "tf2onnx", "export"),
        (["tflite"], [], "ai_edge_litert", "export"),
        (["openvino"], [], "openvino", "openvino"),
        (["openvino"], ["int8"], "nncf", "openvino"),
    ],
)
def test_missing_extra_stops_the_export_before_any_artifact(
    model, pixels, tmp_path, monkeypatch, formats, quantize, module, extra
):
    _without(monkeypatch, module)
    with pytest.raises(extras.MissingExtraError, match=rf'pip install "keras-vit\[{extra}\]"'):
        export_model(
            model,
            tmp_path,
            formats,
            quantize=quantize,
            representative_images=pixels,
            verbose=False,
        )
    assert tree(tmp_path) == []


def test_cli_missing_extra_is_one_line_before_the_model_is_loaded(tmp_path, capsys, monkeypatch):
    _without(monkeypatch, "tf2onnx")
    missing_model = str(tmp_path / "never_loaded.keras")  # loading it would fail differently
    line = cli_error(
        capsys,
        ["export", "--model", missing_model, "--format", "onnx", "--output", str(tmp_path / "o")],
    )
    assert line == (
        "keras-vit export: error: ONNX export needs tf2onnx, which is not installed: "
        'pip install "keras-vit[export]" (or "keras-vit[all]" for every feature).'
    )
    assert tree(tmp_path) == []


# -- damaged artifacts -----------------------------------------------------------------


@pytest.mark.parametrize(
    "filename, kind",
    [("model.tflite", "TFLite"), ("model.onnx", "ONNX"), ("model.keras", "Keras")],
)
def test_garbage_files_give_a_value_error_naming_them(tmp_path, filename, kind):
    path = tmp_path / filename
    path.write_bytes(b"\x00garbage, not a model" * 10)
    with pytest.raises(ValueError, match=rf"{filename} is not a valid {kind} file \(.+\)"):
        load_artifact(path)


def test_garbage_openvino_ir_gives_a_value_error(tmp_path):
    (tmp_path / "model.xml").write_text("<net><layers>truncated")
    (tmp_path / "model.bin").write_bytes(b"\x00" * 16)
    with pytest.raises(ValueError, match=r"OpenVINO cannot compile .*model.xml for CPU"):
        load_artifact(tmp_path / "model.xml")


def test_truncated_export_info_gives_a_value_error(export, tmp_path):
    import shutil

    copy = Path(shutil.copytree(export.path, tmp_path / "1"))
    info = copy / "export_info.json"
    info.write_text(info.read_text()[:40])
    for target in (copy, copy / "model.xml"):
        with pytest.raises(ValueError, match=r"export_info.json is not valid export metadata"):
            load_artifact(target)


def test_precision_applies_to_openvino_only(export):
    with pytest.raises(ValueError, match="applies to OpenVINO .xml files only; got a saved_model"):
        load_artifact(export.path, precision="bf16")
    with pytest.raises(ValueError, match=r"precision must be one of \('f32', 'bf16', 'f16'\)"):
        load_artifact(export.artifacts["openvino"], precision="fp32")


# -- bad pixels and bad image bytes ----------------------------------------------------


def test_nan_and_infinite_pixels_are_refused(export, signatures, pixels):
    bad = pixels.copy()
    bad[1, 3, 4, 0] = np.nan
    bad[2, 0, 0, 2] = np.inf
    with pytest.raises(tf.errors.InvalidArgumentError, match="Expected finite pixel values"):
        signatures["serving_default"](images=tf.constant(bad))
    for path in (export.path, export.artifacts["openvino"]):
        with pytest.raises(ValueError, match="Expected finite pixel values in .*2 of 4 images"):
            load_artifact(path)(bad)


def _encoded(image, fmt):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["BMP", "GIF"])
def test_serve_bytes_takes_bmp_and_gif_like_png(signatures, pixels, fmt):
    # BMP is lossless like PNG; GIF is palette-quantised, so it is compared with
    # its own decoded pixels.
    images = np.round(pixels).astype("uint8")
    encoded = [_encoded(image, fmt) for image in images]
    decoded = np.stack([np.asarray(Image.open(io.BytesIO(e)).convert("RGB")) for e in encoded])
    out = signatures["serve_bytes"](image_bytes=tf.constant(encoded))
    expected = signatures["serving_default"](images=tf.constant(decoded.astype("float32")))
    np.testing.assert_allclose(out["logits"], expected["logits"], atol=1e-5, rtol=0)


def test_serve_bytes_unknown_format_names_its_first_bytes(signatures):
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        signatures["serve_bytes"](image_bytes=tf.constant([b"RIFF\x00\x01webp-ish"]))
    assert "expects encoded JPEG, PNG, GIF or BMP images; got bytes starting with" in str(
        caught.value
    )
    assert "[82 73 70 70 0 1 119 101]" in str(caught.value)  # b"RIFF\x00\x01we"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP"])
def test_serve_bytes_refuses_images_over_the_pixel_limit(signatures, fmt):
    big = np.zeros((41, 40, 3), "uint8")  # 1640 > 40 x 40 pixels
    with pytest.raises(tf.errors.InvalidArgumentError, match="at most 1600 pixels") as caught:
        signatures["serve_bytes"](image_bytes=tf.constant([_encoded(big, fmt)]))
    assert "[41] [40]" in str(caught.value)
    fits = np.zeros((40, 40, 3), "uint8")
    assert signatures["serve_bytes"](image_bytes=tf.constant([_encoded(fits, fmt)]))[
        "logits"
    ].shape == (1, 10)


def test_serve_bytes_size_limit_comes_from_the_header_before_decoding(signatures):
    # A PNG header claiming 100000 x 100000 pixels with no image data: decoding
    # it would fail (or allocate 30 GB); the header check refuses it first.
    header = _encoded(np.zeros((1, 1, 3), "uint8"), "PNG")[:16]
    ihdr = (100000).to_bytes(4, "big") * 2 + b"\x08\x02\x00\x00\x00"
    with pytest.raises(tf.errors.InvalidArgumentError, match="at most 1600 pixels"):
        signatures["serve_bytes"](image_bytes=tf.constant([header + ihdr]))


def test_export_info_records_the_pixel_limit_and_the_precision(export, model, tmp_path):
    info = layout.ExportInfo.read(export.path)
    assert info.max_image_pixels == 1600 and info.openvino_precision == "f32"
    with pytest.raises(ValueError, match="max_image_pixels must be >= 1, got 0"):
        export_model(model, tmp_path, max_image_pixels=0)
    with pytest.raises(ValueError, match=r"openvino_precision must be one of .* got 'fp32'"):
        export_model(model, tmp_path, ["openvino"], openvino_precision="fp32")
    assert tree(tmp_path) == []


# -- an untrained head: said loudly, and parity still meaningful -----------------------


@pytest.fixture(scope="module")
def zero_head_model(fixtures_dir):
    model = model_from_checkpoint(
        fixtures_dir / "vit_token" / "official.npz", semantics="timm", name="fresh_head"
    )
    model.head.kernel.assign(np.zeros(model.head.kernel.shape, "float32"))
    return model


def test_untrained_head_is_reported_and_features_are_compared(zero_head_model, tmp_path):
    with pytest.warns(KerasVitWarning, match="head of 'fresh_head' is untrained"):
        # OpenVINO too: its converter names the zero-bias logits after the head's MatMul.
        result = export_model(zero_head_model, tmp_path, ["saved_model", "openvino"], verbose=False)
    for row in result.parity:
        assert row.max_abs_diff == 0.0  # constant logits: they say nothing
        assert 0.0 < row.pre_logits_max_abs_diff <= row.pre_logits_tolerance < 1e-3


def test_parity_fails_on_features_alone(zero_head_model, tmp_path, monkeypatch):
    # An artifact whose logits match (the head is zero) but whose backbone is off.
    def broken(path, **kwargs):
        artifact = load_artifact(path, **kwargs)
        run = artifact._run
        artifact._run = lambda images: {
            **run(images),
            "pre_logits": run(images)["pre_logits"] + 0.01,
        }
        return artifact

    monkeypatch.setattr(exporter_module, "load_artifact", broken)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KerasVitWarning)
        with pytest.raises(ExportParityError, match=r"saved_model +0\.000e\+00 .* FAIL"):
            export_model(zero_head_model, tmp_path, ["saved_model"], verbose=False)
    assert tree(tmp_path) == ["fresh_head"]  # the model folder, no version, no staging


# -- killed exports' staging folders ---------------------------------------------------


def _dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_stale_staging_folders_are_removed_live_and_foreign_ones_kept(model, tmp_path):
    model_dir = tmp_path / "vit_token"
    model_dir.mkdir()
    host = layout._host()
    stale = model_dir / f".tmp-1-{_dead_pid()}@{host}-abcd1234"
    live = model_dir / f".tmp-1-{os.getpid()}@{host}-efgh5678"
    foreign = model_dir / ".tmp-2-abcdefgh"  # an older naming, owner unknown
    for folder in (stale, live, foreign):
        folder.mkdir()
        (folder / "saved_model.pb").write_bytes(b"half")
    # The live one belongs to a running export: left alone, silently.
    with pytest.warns(KerasVitWarning, match=r"Left 1 staging folder\(s\) .*'[^']*abcdefgh'\]$"):
        result = export_model(model, tmp_path, ["saved_model"], verbose=False)
    assert not stale.exists() and live.exists() and foreign.exists()
    assert result.version == 1


def test_predict_help_says_a_saved_model_is_a_program():
    shown = subprocess.run(
        [sys.executable, "-m", "keras_vit_cli", "predict", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(keras_vit.__file__).parents[1],
    )
    assert shown.returncode == 0
    text = " ".join(shown.stdout.split())
    assert "a SavedModel is a program" in text and "use a .keras file" in text
    assert "safe mode" in text
