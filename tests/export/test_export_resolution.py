"""Position-embedding resize baked into the export, against timm/scipy references.

The vit_token fixture (trained grid 4x4) is exported at 48x48 (static: the
embedding resized once) and with ``dynamic_resolution`` (resized in the
graph of the SavedModel, TFLite and ONNX files); both must give the reference
logits of the independent implementations: ``A`` bilinear (timm on .npz), ``B`` antialiased bicubic
(timm), ``C`` the official ``scipy.ndimage.zoom``.
"""

import numpy as np
import pytest
import tensorflow as tf

from keras_vit import model_from_checkpoint
from keras_vit.export.artifacts import load_artifact
from keras_vit.export.exporter import export_model

pytestmark = pytest.mark.slow  # conversions and end-to-end runs

METHODS = {"official": "C", "bilinear": "A", "bicubic": "B"}


@pytest.fixture(scope="module")
def reference(fixtures_dir):
    return np.load(fixtures_dir / "vit_token" / "reference.npz")


def pixels(reference, size):
    return tf.constant((reference[f"inputs_{size}"] + 1.0) * 127.5, tf.float32)


@pytest.fixture(scope="module")
def model(fixtures_dir):
    checkpoint = fixtures_dir / "vit_token" / "official.npz"
    return model_from_checkpoint(checkpoint, semantics="timm")


def serving_default(result):
    return tf.saved_model.load(result.path).signatures["serving_default"]


@pytest.mark.parametrize("method", METHODS)
def test_static_export_at_48_matches_reference(model, reference, method, tmp_path):
    result = export_model(
        model,
        tmp_path,
        ["saved_model"],
        image_size=48,
        posemb_interpolation=method,
        verbose=False,
    )
    logits = serving_default(result)(images=pixels(reference, "48x48"))["logits"]
    expected = reference[f"logits_48x48_{METHODS[method]}"]
    assert np.max(np.abs(logits.numpy() - expected)) <= 1e-5


# TFLite, ONNX and OpenVINO conversions are slow: check them with one method, the
# most intricate graph (antialiased bicubic).
DYNAMIC_FORMATS = {
    "official": ["saved_model"],
    "bilinear": ["saved_model"],
    "bicubic": ["saved_model", "tflite", "onnx", "openvino"],
}
TOLERANCE = {"saved_model": 1e-5, "tflite": 1e-4, "onnx": 1e-4, "openvino": 1e-4}


@pytest.mark.parametrize("method", METHODS)
def test_dynamic_resolution_matches_reference_at_48x48_and_32x48(
    model, reference, method, tmp_path
):
    result = export_model(
        model,
        tmp_path,
        DYNAMIC_FORMATS[method],
        posemb_interpolation=method,
        dynamic_resolution=True,
        verbose=False,
    )
    assert set(result.artifacts) == set(DYNAMIC_FORMATS[method])
    for name, path in result.artifacts.items():
        artifact = load_artifact(path)
        for size in ("48x48", "32x48"):
            logits = artifact(pixels(reference, size).numpy())
            expected = reference[f"logits_{size}_{METHODS[method]}"]
            assert np.max(np.abs(logits - expected)) <= TOLERANCE[name], (name, size)
    if method == "official":
        with pytest.raises(tf.errors.InvalidArgumentError, match="multiples of the patch size"):
            serving_default(result)(images=tf.zeros((1, 36, 48, 3)))
