"""OpenVINO IR of a classification ``ViT``: float32 and NNCF int8.

The IR (``model.xml`` with its weights in ``model.bin`` beside it) takes
``images`` float32 ``(batch, height, width, channels)`` in [0, 255]
(preprocessing inside; any batch, and any multiple of the patch size for a
``dynamic_resolution`` model) and returns ``logits``, ``probabilities`` and
``pre_logits``, like the TFLite and ONNX files.

OpenVINO converts the same classifier function as the other formats, traced
with a rank-4 signature (``ViT.images_spec``): its CPU plugin refuses inputs of
unknown rank. The weights are stored in float32 (``compress_to_fp16=False``).

Precision is chosen when the IR is compiled, not stored in it: on CPUs with
AVX512-BF16 or AMX the CPU plugin's default ``INFERENCE_PRECISION_HINT`` is
bf16, so ``compile_openvino`` always passes one explicitly (``"f32"`` by
default: float32 numbers; ``"bf16"``: about 2x faster on such CPUs, with
bf16 rounding). ``export_model`` records the hint its parity check used in
``export_info.json``, and ``load_artifact`` uses it unless told otherwise.

The hint is a request: on a CPU without bf16 (AVX512-BF16 or AMX) or f16
(AMX-FP16) instructions the plugin silently computes in another precision
(OpenVINO 2026.4: f32 for any hint on an AVX2 AMD EPYC, bf16 for an f16 hint
on an AVX512-BF16 one). ``runs_as`` says which precision a hint gets
on this CPU; ``compile_openvino`` warns when it is not the one asked for, and
the parity check applies the tolerance of the precision that ran.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import tensorflow as tf

from keras_vit.atomic import atomic_path
from keras_vit.export.saved_model import classify_fn
from keras_vit.extras import require
from keras_vit.messages import KerasVitWarning
from keras_vit.model.ops import spelled_for
from keras_vit.validation import choice

#: ``INFERENCE_PRECISION_HINT`` values of the CPU plugin.
PRECISIONS = ("f32", "bf16", "f16")
QUANTIZATIONS = ("float32", "int8")
#: The IR's outputs (``keras_vit.export.saved_model.classify_fn``).
OUTPUT_NAMES = ("logits", "probabilities", "pre_logits")
DEVICE = "CPU"
#: A reduced precision hint -> the CPU plugin's OPTIMIZATION_CAPABILITIES entry it needs.
_CAPABILITY = {"bf16": "BF16", "f16": "FP16"}
#: What the CPU plugin computes a hint in where this CPU lacks its instructions.
_FALLBACK = {"f16": "bf16", "bf16": "f32"}


def convert_openvino(model, path, quantization="float32", representative_images=None):
    """Converts ``model`` to an OpenVINO IR ``path`` (``.xml``; weights in ``.bin`` beside it).

    Args:
        model: a built float32 ``keras_vit.ViT`` with a linear head.
        path: str. Output ``.xml`` file; the ``.bin`` file gets the same
            name. Both are written beside their final names and renamed,
            the ``.xml`` last.
        quantization: str. ``"float32"`` or ``"int8"`` (NNCF post-training
            quantization of the GEMMs, calibrated on ``representative_images``).
        representative_images: array ``(n, height, width, channels)`` in
            [0, 255]: the ``"int8"`` calibration set (100-300 images of the
            deployment data are typical).

    Returns:
        str. ``path``.

    Raises:
        ValueError: for an unknown quantization, a path not ending in
            ``.xml``, or ``"int8"`` without calibration images.
        RuntimeError: if the CPU plugin cannot compile or run the IR.
    """
    ov = require("openvino", "openvino", "OpenVINO export")
    choice(quantization, "quantization", QUANTIZATIONS)
    path = os.fspath(path)
    if not path.endswith(".xml"):
        raise ValueError(f"An OpenVINO IR path must end in .xml, got {path!r}.")
    if quantization == "int8" and representative_images is None:
        raise ValueError(
            "OpenVINO int8 quantization needs representative images "
            "(array (n, height, width, channels) in [0, 255]); got None."
        )
    function = tf.function(classify_fn(model), input_signature=[model.images_spec()])
    with spelled_for("openvino"):  # traced here: the forms OpenVINO fuses
        ir = ov.convert_model(function)
    del function
    for output in ir.outputs:  # "head/MatMul:0" may name the logits too: keep the output names
        output.get_tensor().set_names({n for n in output.get_names() if n in OUTPUT_NAMES})
    if quantization == "int8":
        ir = quantize_int8(ir, representative_images)
    _end_tail_in_a_gemm(ir, "pre_logits")  # after NNCF: the identity stays float32
    _check_runs(ir, (1, *model.image_size, model.channels))
    with atomic_path(path, ".xml") as partial:
        ov.save_model(ir, partial, compress_to_fp16=False)
        os.replace(partial[: -len(".xml")] + ".bin", path[: -len(".xml")] + ".bin")
    return path


def _end_tail_in_a_gemm(ir, output_name):
    """Makes the output ``output_name`` of ``ir`` a MatMul by the identity, in place.

    Under a bf16 (or f16) precision hint, OpenVINO's CPU plugin keeps in
    float32 every node between an output and the nearest GEMM or
    convolution above it (the "graph tail", for the accuracy of the final
    element-wise ops). For ``logits`` that tail is empty. ``pre_logits``
    (the final LayerNorm of the residual stream, ``(batch, D)``) would make
    the whole residual stream a tail, back to the patch embedding: every
    residual addition in float32, with reorders between it and its bf16
    neighbours (ViT-B/16: 76 reorder kernels per inference against 27
    without, and 0.54x the bf16 speed of OpenVINO's conversion of the
    Hugging Face graph, which has no such output). ``x @ I`` is exact in
    float32, costs ``D * D`` multiply-adds per image, and ends the tail at
    the output: the residual stream then runs in the hinted precision, as
    in every graph that outputs logits only.

    Args:
        ir: ``openvino.Model``; edited in place.
        output_name: str. Name of an output ``(batch, D)``.
    """
    import openvino.opset13 as opset

    (result,) = [r for r in ir.get_results() if output_name in r.input_value(0).get_names()]
    source = result.input_value(0)
    width = source.get_partial_shape()[-1].get_length()
    identity = opset.matmul(source, opset.constant(np.eye(width, dtype="float32")), False, False)
    result.input(0).replace_source_output(identity.output(0))
    source.get_tensor().set_names(set())
    identity.output(0).get_tensor().set_names({output_name})


def quantize_int8(ir, representative_images):
    """NNCF post-training int8 quantization of an ``openvino.Model``.

    Activations and weights of the GEMMs in int8 (``ModelType.TRANSFORMER``:
    NNCF's transformer scheme, which keeps LayerNorm, softmax and GELU in
    floating point), with statistics from ``representative_images``.

    Weights take NNCF's overflow fix in every layer (``OverflowFix.ENABLE``:
    a 7-bit weight range), not only in the first (its default). A CPU
    without VNNI (an AVX2 AMD EPYC) multiplies u8 x s8 with ``vpmaddubsw``,
    whose 16-bit pair sums saturate on full-range weights: there a digits
    ViT's int8 IR agreed with the float model on 62 % of held-out digits
    with NNCF's default and on 98 % with the fix. The IR is portable, and
    the exporting CPU's parity check cannot speak for the serving CPU's, so
    the fix is always applied.

    Args:
        ir: ``openvino.Model`` taking float32 images in [0, 255].
        representative_images: array ``(n, height, width, channels)``.

    Returns:
        The quantized ``openvino.Model``.
    """
    nncf = require("nncf", "openvino", "OpenVINO int8 quantization")
    images = np.asarray(representative_images, dtype="float32")
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        OverflowFix,
    )

    dataset = nncf.Dataset(list(images), lambda image: image[None])
    return nncf.quantize(
        ir,
        dataset,
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(images),
        advanced_parameters=AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE),
    )


def runs_as(precision):
    """The precision the CPU plugin computes in when asked for ``precision``.

    ``precision`` itself where this CPU has the instructions for it (the
    plugin's ``OPTIMIZATION_CAPABILITIES`` list ``BF16`` / ``FP16``), else
    the next that it has: ``f16`` falls back to ``bf16`` (seen on an AMD
    EPYC with AVX512-BF16 and no FP16), ``bf16`` to ``f32`` (an AVX2 CPU).

    Args:
        precision: str, one of ``PRECISIONS``.

    Returns:
        str, one of ``PRECISIONS``.
    """
    ov = require("openvino", "openvino", "OpenVINO inference")
    choice(precision, "precision", PRECISIONS)
    if precision == "f32":
        return precision
    capabilities = ov.Core().get_property(DEVICE, "OPTIMIZATION_CAPABILITIES")
    while precision != "f32" and _CAPABILITY[precision] not in capabilities:
        precision = _FALLBACK[precision]
    return precision


def compiled_precision(compiled):
    """The precision an ``openvino.CompiledModel`` computes in: ``"f32"``, ``"bf16"`` or ``"f16"``.

    The plugin's own answer after compiling (its ``INFERENCE_PRECISION_HINT``
    property), which ``runs_as`` predicts before.
    """
    return compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()


def compile_openvino(path_or_model, precision="f32"):
    """Compiles an IR (file or ``openvino.Model``) for the CPU with a precision hint.

    Warns (``KerasVitWarning``) when this CPU cannot compute in
    ``precision`` and the plugin runs another instead (see ``runs_as``).

    Args:
        path_or_model: str path of an ``.xml`` file, or an ``openvino.Model``.
        precision: str. ``INFERENCE_PRECISION_HINT``: ``"f32"``, ``"bf16"``
            or ``"f16"``.

    Returns:
        ``openvino.CompiledModel``.

    Raises:
        ValueError: for an unknown precision, or a file the plugin cannot
            read or compile.
    """
    ov = require("openvino", "openvino", "OpenVINO inference")
    choice(precision, "precision", PRECISIONS)
    try:
        compiled = ov.Core().compile_model(
            path_or_model, DEVICE, {"INFERENCE_PRECISION_HINT": precision}
        )
    except RuntimeError as err:
        where = path_or_model if isinstance(path_or_model, str) else "the converted model"
        raise ValueError(
            f"OpenVINO cannot compile {where} for {DEVICE} with precision {precision!r}: "
            f"{str(err).strip().splitlines()[0]}"
        ) from None
    ran = compiled_precision(compiled)
    if ran != precision:
        warnings.warn(
            f"OpenVINO computes in {ran} on this CPU: it has no {_CAPABILITY[precision]} "
            f"instructions for the {precision!r} precision hint.",
            KerasVitWarning,
            stacklevel=2,
        )
    return compiled


def _check_runs(ir, input_shape):
    """Compiles and runs ``ir`` once; raises if the CPU plugin refuses it."""
    try:
        outputs = compile_openvino(ir)(np.zeros(input_shape, "float32"))
    except (ValueError, RuntimeError) as err:
        raise RuntimeError(f"OpenVINO converted a model its CPU plugin refuses: {err}") from err
    if not all(np.isfinite(value).all() for value in outputs.values()):
        raise RuntimeError("The converted OpenVINO model gives non-finite outputs.")
