"""``keras-vit predict`` gives the same top-k with every artifact kind."""

import re

import numpy as np
import pytest
import tensorflow as tf

import keras_vit
from keras_vit import model_from_checkpoint
from keras_vit_cli import main as cli

LABELS = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
LINE = re.compile(r"^  (\d)\. class (\d+) (\w+): (\d\.\d{4})$")


@pytest.fixture(scope="module")
def exported(fixtures_dir, tmp_path_factory):
    """The vit_token fixture as .keras, exported by the CLI, and two photos."""
    from skimage import data

    folder = tmp_path_factory.mktemp("predict")
    model = model_from_checkpoint(
        fixtures_dir / "vit_token" / "official.npz", semantics="timm", name="vit_token"
    )
    model.save(folder / "vit_token.keras")
    (folder / "labels.txt").write_text("\n".join(LABELS) + "\n")
    images = [folder / "cat.png", folder / "astronaut.jpg"]
    images[0].write_bytes(tf.io.encode_png(data.chelsea()).numpy())
    images[1].write_bytes(tf.io.encode_jpeg(data.astronaut()).numpy())
    code = cli.main(
        [
            "export",
            "--model",
            str(folder / "vit_token.keras"),
            "--output",
            str(folder / "out"),
            "--format",
            "saved_model,tflite,onnx,openvino",
            "--labels",
            str(folder / "labels.txt"),
        ]
    )
    assert code == 0
    pixels = np.stack([keras_vit.load_image(path, 32) for path in images])
    logits = model(keras_vit.preprocess_input(pixels)).numpy()
    return folder, [str(path) for path in images], logits


def predictions(capsys, artifact, images, *extra):
    assert cli.main(["predict", artifact, *images, "--top-k", "3", *extra]) == 0
    rows = [LINE.match(line) for line in capsys.readouterr().out.splitlines()]
    return [(int(m[2]), m[3], float(m[4])) for m in rows if m]


@pytest.mark.parametrize(
    "artifact",
    [
        "vit_token.keras",
        "out/vit_token",
        "out/vit_token/1/model.tflite",
        "out/vit_token/1/model.onnx",
        "out/vit_token/1/model.xml",
    ],
)
def test_every_artifact_prints_the_keras_top_k(exported, artifact, capsys):
    folder, images, logits = exported
    extra = ["--labels", str(folder / "labels.txt")] if artifact.endswith(".keras") else []
    rows = predictions(capsys, str(folder / artifact), images, *extra)
    probabilities = tf.nn.softmax(logits).numpy()
    expected = [
        (int(i), LABELS[i], round(float(p[i]), 4))
        for p in probabilities
        for i in np.argsort(-p)[:3]
    ]
    assert [(i, label) for i, label, _ in rows] == [(i, label) for i, label, _ in expected]
    np.testing.assert_allclose([p for *_, p in rows], [p for *_, p in expected], atol=2e-4)


def test_predict_rejects_unknown_artifacts(exported, capsys):
    folder, images, _ = exported
    assert cli.main(["predict", str(folder / "labels.txt"), *images]) == 2
    assert "expected a .keras, .tflite, .onnx or OpenVINO .xml file" in capsys.readouterr().err
    assert cli.main(["predict", str(folder / "missing.onnx"), *images]) == 2


@pytest.mark.slow
def test_quickstart_export_predicts_a_digit_through_the_saved_model(tmp_path, capsys):
    from keras_vit.data import load_digits
    from keras_vit_cli.commands.quickstart import export_quickstart

    model = keras_vit.ViT(
        image_size=8,
        patch_size=2,
        hidden_size=16,
        num_layers=1,
        num_heads=2,
        mlp_dim=32,
        num_classes=10,
        channels=1,
        name="digits",
    )
    model.head.kernel.assign(np.random.default_rng(0).normal(size=(16, 10)))
    model.save(tmp_path / "model.keras")
    result, true_digit, predicted = export_quickstart(str(tmp_path))
    assert result.path == str(tmp_path / "export" / "digits" / "1")
    _, (x_test, y_test) = load_digits()
    assert true_digit == y_test[0]
    keras_prediction = model(keras_vit.preprocess_input(x_test[:1])).numpy().argmax()
    assert predicted == keras_prediction
    assert (tmp_path / "digit.png").exists()
    assert f"is predicted {predicted}" in capsys.readouterr().out


@pytest.mark.slow
def test_cli_export_at_another_size_reproduces_the_reference(exported, fixtures_dir):
    folder, _, _ = exported
    code = cli.main(
        [
            "export",
            "--model",
            str(folder / "vit_token.keras"),
            "--output",
            str(folder / "at48"),
            "--image-size",
            "48",
            "--posemb-interpolation",
            "bilinear",
        ]
    )
    assert code == 0
    reference = np.load(fixtures_dir / "vit_token" / "reference.npz")
    artifact = keras_vit.load_artifact(folder / "at48" / "vit_token")
    assert artifact.image_size == (48, 48)
    logits = artifact((reference["inputs_48x48"] + 1.0) * 127.5)
    assert np.max(np.abs(logits - reference["logits_48x48_A"])) <= 1e-5
