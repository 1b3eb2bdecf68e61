"""TFLite conversion of a classification ``ViT``: float32, float16, int8.

The ``.tflite`` file has one signature, ``serving_default``: ``images``
float32 ``(batch, height, width, channels)`` in [0, 255] (preprocessing
inside) -> ``logits`` and ``probabilities`` ``(batch, classes)``. Image
decoding cannot live in a ``.tflite`` (neither LiteRT interpreter has Flex
ops): decode on the host.
"""

from __future__ import annotations

import gc
import tempfile
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_vit.atomic import write_bytes_atomic
from keras_vit.export.saved_model import classify_fn

QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")
#: Above this many bytes of weights, the flatbuffer stores its buffers after
#: the model (buffer offsets): the converter then peaks at about 2x the
#: weights instead of 5x. Such files need LiteRT / TFLite 2.15 or newer, so
#: small (mobile-sized) models keep the classic layout.
BUFFER_OFFSET_BYTES = 256 * 2**20


def convert_tflite(model, path, quantization="float32", representative_images=None):
    """Converts ``model`` to a ``.tflite`` file (written atomically).

    Conversion goes through a temporary SavedModel and
    ``TFLiteConverter.from_saved_model`` (``from_concrete_functions`` gives
    wrong numbers with Keras 3 models). Models with more than
    ``BUFFER_OFFSET_BYTES`` of weights are written with buffer offsets.

    Args:
        model: a built float32 ``keras_vit.ViT`` with a linear head; with
            ``dynamic_resolution`` the file takes any multiple of the patch
            size.
        path: str. Output ``.tflite`` file.
        quantization: str. ``"float32"`` (none), ``"float16"`` (weights in
            float16), ``"dynamic"`` (dynamic-range int8 weights) or
            ``"int8"`` (full-integer int8 kernels, float32 input/output;
            needs ``representative_images``).
        representative_images: array ``(n, height, width, channels)`` in
            [0, 255] for the ``"int8"`` calibration (100-500 images of the
            deployment data are typical).

    Returns:
        str. ``path``.

    Raises:
        ValueError: for an unknown quantization or missing calibration data.
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}.")
    if quantization == "int8" and representative_images is None:
        raise ValueError(
            "Full-integer int8 quantization needs representative images "
            "(array (n, height, width, channels) in [0, 255]); got None."
        )
    spec = model.images_spec()
    with tempfile.TemporaryDirectory(prefix="keras_vit_tflite_") as source:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serving_default", classify_fn(model), input_signature=[spec])
        archive.write_out(source, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(
            source, signature_keys=["serving_default"]
        )
        gc.collect()  # from_saved_model loaded the whole model in Python to read its signature
        _configure(converter, quantization, representative_images)
        weight_bytes = sum(
            int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in model.weights
        )
        # A private option of TFLiteConverterV2 (TF >= 2.15), set only where it exists.
        if weight_bytes > BUFFER_OFFSET_BYTES and hasattr(
            converter, "_experimental_use_buffer_offset"
        ):
            converter._experimental_use_buffer_offset = True
        with warnings.catch_warnings():  # int8 calibration uses tf.lite.Interpreter
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
            flatbuffer = converter.convert()
    return write_bytes_atomic(flatbuffer, path, ".tflite")


def _configure(converter, quantization, representative_images):
    if quantization == "float32":
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "int8":
        images = np.asarray(representative_images, dtype="float32")

        def representative_dataset():
            for image in images:
                yield {"images": image[None]}

        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
