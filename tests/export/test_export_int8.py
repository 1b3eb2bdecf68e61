"""Quantized TFLite of a small digits-trained ViT keeps its predictions.

A tiny ViT is trained for a few seconds on the built-in digits; the
full-integer int8 (calibrated on training digits) and dynamic-range files
must agree with the float model on >= 90% of the held-out digits.
"""

import keras
import numpy as np
import pytest

import keras_vit
from keras_vit.data import load_digits
from keras_vit.export.exporter import export_model

pytestmark = pytest.mark.slow  # conversions and end-to-end runs


@pytest.fixture(scope="module")
def digits_export(tmp_path_factory):
    keras.utils.set_random_seed(0)
    (x_train, y_train), (x_test, _) = load_digits()
    model = keras_vit.ViT(
        image_size=8,
        patch_size=2,
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        mlp_dim=64,
        num_classes=10,
        channels=1,
        name="digits",
    )
    model.compile(
        keras.optimizers.Adam(3e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(keras_vit.preprocess_input(x_train), y_train, epochs=6, batch_size=64, verbose=0)
    result = export_model(
        model,
        tmp_path_factory.mktemp("digits"),
        ["tflite"],
        quantize=["dynamic", "int8"],
        representative_images=x_train[:200],
        samples=x_test[:64],
        verbose=False,
    )
    held_out = x_test.astype("float32")
    return result, held_out, model(keras_vit.preprocess_input(held_out)).numpy()


@pytest.mark.parametrize("artifact", ["tflite_int8", "tflite_dynamic"])
def test_quantized_tflite_agrees_on_held_out_digits(digits_export, artifact):
    from ai_edge_litert.interpreter import Interpreter

    result, images, keras_logits = digits_export
    interpreter = Interpreter(model_path=result.artifacts[artifact])
    runner = interpreter.get_signature_runner("serving_default")
    logits = np.concatenate([runner(images=image[None])["logits"] for image in images])
    agreement = float(np.mean(logits.argmax(-1) == keras_logits.argmax(-1)))
    print(f"{artifact}: top-1 agreement {agreement:.1%} on {len(images)} held-out digits")
    assert agreement >= 0.9


def test_int8_file_has_integer_kernels(digits_export):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=digits_export[0].artifacts["tflite_int8"])
    dtypes = {detail["dtype"].__name__ for detail in interpreter.get_tensor_details()}
    assert "int8" in dtypes


def test_export_info_is_strict_json(digits_export):
    import json

    def reject(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    with open(f"{digits_export[0].path}/export_info.json") as file:
        info = json.load(file, parse_constant=reject)
    rows = {row["artifact"]: row for row in info["parity"]}
    assert rows["tflite_int8"]["tolerance"] is None  # judged by top-1 agreement only
    assert rows["tflite_int8"]["top1_agreement"] >= rows["tflite_int8"]["min_agreement"]
