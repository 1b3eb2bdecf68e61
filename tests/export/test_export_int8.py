"""Quantized TFLite and OpenVINO files of a small digits-trained ViT keep its predictions.

A tiny ViT is trained for a few seconds on the built-in digits; the TFLite
full-integer int8 and OpenVINO NNCF int8 files (both calibrated on the same
training digits), the dynamic-range TFLite file and the OpenVINO IR run with
the bf16 precision hint must agree with the float model on >= 90% of the
held-out digits.
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
        ["tflite", "openvino"],
        quantize=["dynamic", "int8"],
        representative_images=x_train[:200],
        samples=x_test[:64],
        verbose=False,
    )
    held_out = x_test.astype("float32")
    return result, held_out, model(keras_vit.preprocess_input(held_out)).numpy()


def _openvino_logits(path, images, precision):
    import openvino as ov

    compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": precision})
    return compiled(images)[compiled.output("logits")]


def _tflite_logits(path, images):
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=path).get_signature_runner("serving_default")
    return np.concatenate([runner(images=image[None])["logits"] for image in images])


@pytest.mark.parametrize(
    "artifact, precision",
    [
        ("tflite_int8", None),
        ("tflite_dynamic", None),
        ("openvino_int8", "f32"),
        ("openvino", "bf16"),
    ],
)
def test_reduced_precision_agrees_on_held_out_digits(digits_export, artifact, precision):
    result, images, keras_logits = digits_export
    path = result.artifacts[artifact]
    if precision is None:
        logits = _tflite_logits(path, images)
    else:
        logits = _openvino_logits(path, images, precision)
    agreement = float(np.mean(logits.argmax(-1) == keras_logits.argmax(-1)))
    print(f"{artifact} {precision}: top-1 agreement {agreement:.1%} on {len(images)} digits")
    assert agreement >= 0.9


def test_int8_file_has_integer_kernels(digits_export):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=digits_export[0].artifacts["tflite_int8"])
    dtypes = {detail["dtype"].__name__ for detail in interpreter.get_tensor_details()}
    assert "int8" in dtypes


def test_openvino_int8_ir_has_quantized_gemms(digits_export):
    import openvino as ov

    ops = ov.Core().read_model(digits_export[0].artifacts["openvino_int8"]).get_ordered_ops()
    types = [op.get_type_name() for op in ops]
    assert types.count("FakeQuantize") >= 4  # the inputs of the block's GEMMs
    weights = [op for op in ops if op.get_type_name() == "Constant"]
    assert any(op.get_element_type().get_type_name() == "i8" for op in weights)


@pytest.mark.parametrize("precision", ["f32", "bf16"])
def test_openvino_int8_fuses_its_fake_quantize_ops(digits_export, precision):
    # The CPU plugin folds a FakeQuantize into the kernel before it (LayerNorm, GELU GEMM,
    # attention) unless a Reshape stands between them: the OpenVINO trace keeps its GEMMs on
    # 3-D tokens (keras_vit.model.blocks.on_tokens). With the 2-D spelling five per block stayed
    # their own f32 kernels; what remains is one per block (the values) and the head's input.
    import openvino as ov

    compiled = ov.Core().compile_model(
        digits_export[0].artifacts["openvino_int8"], "CPU", {"INFERENCE_PRECISION_HINT": precision}
    )
    kernels = [
        op.get_rt_info()["layerType"].astype(str) for op in compiled.get_runtime_model().get_ops()
    ]
    assert "FullyConnected" in kernels
    num_layers = 1  # digits_export's model
    assert kernels.count("FakeQuantize") <= num_layers + 2


def test_export_info_is_strict_json(digits_export):
    import json

    def reject(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    with open(f"{digits_export[0].path}/export_info.json") as file:
        info = json.load(file, parse_constant=reject)
    rows = {row["artifact"]: row for row in info["parity"]}
    assert rows["tflite_int8"]["tolerance"] is None  # judged by top-1 agreement only
    assert rows["tflite_int8"]["top1_agreement"] >= rows["tflite_int8"]["min_agreement"]
