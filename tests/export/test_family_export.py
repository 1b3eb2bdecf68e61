"""The ViT-family options through every export format, at another resolution.

A model with a MAP head, register tokens and LayerScale is exported at 48x48
(trained grid 4x4) to SavedModel, TFLite and ONNX, statically and with
``dynamic_resolution``; ``export_model`` refuses to publish beyond the
parity tolerances, and the artifacts are compared here again with the
Keras model and with timm's references of the fixtures.
"""

import numpy as np
import pytest

import keras_vit
from keras_vit import model_from_checkpoint
from keras_vit.export import export_model, load_artifact

pytestmark = pytest.mark.slow  # three conversions per export

OPTIONS = dict(classifier="map", num_register_tokens=4, layer_scale_init=0.5, posemb="learn_grid")


@pytest.fixture(scope="module")
def family_model():
    model = keras_vit.ViT(
        image_size=32, patch_size=8, hidden_size=48, num_layers=2, num_heads=4, mlp_dim=96,
        num_classes=6, posemb_interpolation="bicubic", **OPTIONS,
    )  # fmt: skip
    rng = np.random.default_rng(7)
    model.set_weights([rng.normal(0, 0.3, w.shape).astype("float32") for w in model.get_weights()])
    return model


def pixels(n=4, size=48, seed=3):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_map_registers_layerscale_exports_match_keras_at_48(family_model, dynamic, tmp_path):
    result = export_model(
        family_model, tmp_path, ["saved_model", "tflite", "onnx"], image_size=48,
        dynamic_resolution=dynamic, verbose=False,
    )  # fmt: skip
    assert {row.artifact for row in result.parity} == {"saved_model", "tflite", "onnx"}
    assert all(row.ok and row.top1_agreement == 1.0 for row in result.parity)
    expected = np.asarray(family_model.inference_copy(image_size=48)(pixels() / 127.5 - 1.0))
    for name, path in result.artifacts.items():
        diff = np.max(np.abs(load_artifact(path)(pixels()) - expected))
        assert diff <= 1e-4 * max(1.0, np.max(np.abs(expected))), (name, diff)


@pytest.mark.parametrize(
    "case, file, method, key",
    [
        ("vit_registers_layerscale", "timm.safetensors", "bicubic", "logits_48x48_B"),
        ("vit_map_head", "big_vision.npz", "official", "logits_48x48_C"),
    ],
)
def test_exported_family_fixtures_reproduce_timm_at_48(
    fixtures_dir, case, file, method, key, tmp_path
):
    reference = np.load(fixtures_dir / case / "reference.npz")
    model = model_from_checkpoint(fixtures_dir / case / file, num_heads=4)
    result = export_model(
        model, tmp_path, ["saved_model", "onnx"], image_size=48, posemb_interpolation=method,
        verbose=False,
    )  # fmt: skip
    images = (reference["inputs_48x48"] + 1.0) * 127.5
    for path in result.artifacts.values():
        assert np.max(np.abs(load_artifact(path)(images) - reference[key])) <= 1e-4
